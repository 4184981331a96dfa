// Every IPC call of the page goes through here. A reply that was on its way
// when the app locked (the evidence of the note just classified, the history
// list) would otherwise be drawn on the page the lock has just cleared; it is
// turned into the Rust side's own "locked" refusal instead, which the
// handlers already meet with the lock screen (or, on a settings or export
// button, that message): never with the reply.

import { invoke as tauriInvoke, type InvokeArgs, type InvokeOptions } from "@tauri-apps/api/core";

/** The refusal the Rust side gives while locked (error.rs, `Locked`). */
const LOCKED = "MedText is locked after a period without use: unlock it to go on";

let locks = 0;

/** Called when the lock screen clears the page: replies pending now are dropped. */
export function noteLock(): void {
  locks += 1;
}

/** `invoke`, unless the app locked while the reply was on its way. */
export async function invoke<T>(cmd: string, args?: InvokeArgs, options?: InvokeOptions): Promise<T> {
  const before = locks;
  const reply = await tauriInvoke<T>(cmd, args, options);
  if (locks !== before) throw LOCKED;
  return reply;
}

/** For the lock's own commands, whose replies hold no patient text and must
 * arrive whatever happened meanwhile (two lock checks may overlap). */
export { tauriInvoke as invokeLockCommand };
