// Every IPC call of the page goes through here. A reply that was on its way
// when the app locked (the evidence of the note just classified, the history
// list, an error that quotes a file) would otherwise be drawn on the page the
// lock has just cleared. `invoke` turns such a reply, success or error, into
// the Rust side's own "locked" refusal, which the handlers already meet with
// the lock screen: never with the reply.

import { invoke as tauriInvoke, type InvokeArgs, type InvokeOptions } from "@tauri-apps/api/core";

/** The refusal the Rust side gives while locked (error.rs, `Locked`). */
const LOCKED = "MedText is locked after a period without use: unlock it to go on";

let locks = 0;

/** Called when the lock screen clears the page: replies pending now are dropped. */
export function noteLock(): void {
  locks += 1;
}

/** Asked after an await: has the app locked since `lockWatch()` was called?
 * For work other than IPC that ends in patient text (reading a dropped file). */
export function lockWatch(): () => boolean {
  const before = locks;
  return () => locks !== before;
}

/** `invoke`, unless the app locked while the reply was on its way. */
export async function invoke<T>(cmd: string, args?: InvokeArgs, options?: InvokeOptions): Promise<T> {
  const lockedSince = lockWatch();
  try {
    const reply = await tauriInvoke<T>(cmd, args, options);
    if (!lockedSince()) return reply;
  } catch (e) {
    if (!lockedSince()) throw e;
  }
  throw LOCKED;
}

/** For commands whose replies hold no patient text: the lock's own (two lock
 * checks may overlap), and changes whose success must be reported as such
 * even if the app locked meanwhile (a model chosen, records deleted). */
export { tauriInvoke as invokeNoPatientText };
