// The screen side of the idle lock. The Rust side decides when the app is
// locked and refuses patient data while it is; this module makes sure no
// patient text stays on screen (or in the page's DOM) once it is.

import type { PolicyStatus } from "./types";

/**
 * Removes every patient text from the page: the note being written, the
 * result and its evidence, the history list, training figures, a shown
 * recovery key and any message. Element ids are the page's (index.html).
 */
export function clearPatientText(doc: Document = document): void {
  // Typed text: the note, a feedback note and search words (they may name a
  // patient); the files chosen (so may their names); and secrets typed but not
  // sent (the recovery key opens the whole history).
  for (const id of [
    "note-input",
    "feedback-note",
    "history-text",
    "batch-file",
    "batch-folder",
    "train-file",
    "recover-key",
    "current-passphrase",
    "new-passphrase",
  ]) {
    const field = doc.getElementById(id) as HTMLInputElement | HTMLTextAreaElement | null;
    if (field) field.value = "";
  }
  const count = doc.getElementById("char-count");
  if (count) count.textContent = "0 characters";
  for (const id of [
    "result-label",
    "result-confidence",
    "result-probabilities",
    "result-evidence",
    "result-meta",
    "history-list",
    "train-summary",
    "train-figures",
    "recovery-key",
    "error",
    "history-rows",
    "history-count",
    "detail-title",
    "detail-meta",
    "detail-probabilities",
    "detail-text",
    "detail-feedback",
    "batch-rows",
    "batch-status",
  ]) {
    doc.getElementById(id)?.replaceChildren();
  }
  for (const id of [
    "result",
    "result-evidence-block",
    "evidence-pending",
    "train-result",
    "error",
    "history-detail",
    "feedback-form",
    "batch-results",
  ]) {
    const el = doc.getElementById(id);
    if (el) el.hidden = true;
  }
  const recovery = doc.getElementById("recovery-dialog") as HTMLDialogElement | null;
  if (recovery?.open) recovery.close();
}

/** The lines of the "Set by your IT department" list. */
export function managedLines(policy: PolicyStatus): string[] {
  const names: Record<string, string> = {
    "lock.idle_minutes": "Lock after idle (minutes)",
    "lock.unlock": "Unlock with",
    "history.retention_days": "Keep history (days)",
    "history.allow_export": "Unencrypted export allowed",
    "history.allow_backup": "Backups allowed",
    "input.max_text_chars": "Longest text (characters)",
    "packs.allowed_signers": "Model packs accepted from",
    "logs.keep_days": "Keep logs (days)",
    "logs.max_file_mb": "Log file size (MB)",
    "recovery.escrow_public_key": "Recovery key escrowed to IT, key",
    "recovery.escrow_dir": "Recovery key escrow folder",
  };
  const words: Record<string, string> = { true: "yes", false: "no" };
  return policy.managed.map((m) => `${names[m.key] ?? m.key}: ${words[m.value] ?? m.value}`);
}

/** Calls `report` at most once per `everyMs` while the user is active. */
export function throttle(report: () => void, everyMs: number, now: () => number = Date.now): () => void {
  let last = -Infinity;
  return () => {
    const t = now();
    if (t - last >= everyMs) {
      last = t;
      report();
    }
  };
}
