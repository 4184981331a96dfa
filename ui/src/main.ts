import { Channel } from "@tauri-apps/api/core";
import { invoke, invokeNoPatientText, lockWatch, noteLock } from "./ipc";
import {
  inputProblem,
  renderEvidence,
  renderHistory,
  renderPackChoices,
  renderResult,
  renderTrainResult,
  resultSummary,
  showError,
  trainingProgress,
} from "./render";
import { clearBatch, initBatchScreen } from "./batch-screen";
import { clearHistoryScreen, fillHistoryFilters, initHistoryScreen } from "./history-screen";
import { clearPatientText, managedLines, throttle } from "./lock";
import { renderModelCards, signatureHeader } from "./models-screen";
import { followHash } from "./nav";
import { initSettingsScreen, loadSettings } from "./settings-screen";
import type {
  AppStatus,
  Classification,
  LockStatus,
  ClassifyResponse,
  HistoryEntry,
  ModelInfo,
  PackList,
  TrainOutcome,
  TrainProgress,
  WordEvidence,
} from "./types";

const input = document.getElementById("note-input") as HTMLTextAreaElement;
const button = document.getElementById("classify-button") as HTMLButtonElement;
const count = document.getElementById("char-count") as HTMLElement;
const status = document.getElementById("status") as HTMLElement;
const packSelect = document.getElementById("pack-select") as HTMLSelectElement;
let maxChars = 100_000;
let current: ModelInfo | null = null;
/** The packs installed, for label names in the feedback form. */
let packs: PackList = { packs: [], broken: [] };
/** The last result shown and its history record, for copy and feedback. */
let lastResult: { classification: Classification; savedId: number | null } | null = null;

function errorText(e: unknown): string {
  return typeof e === "string" ? e : "Something went wrong; please try again.";
}

/** Counts refreshes of the recent list, so that an older reply never replaces a newer one. */
let refreshes = 0;

async function refreshHistory(): Promise<void> {
  const refresh = ++refreshes;
  try {
    const entries = await invoke<HistoryEntry[]>("recent_history");
    if (refresh === refreshes) renderHistory(entries);
  } catch (e) {
    if (!(await lockedOut(e))) showError(`History unavailable: ${errorText(e)}`);
  }
}

// ---- Idle lock ------------------------------------------------------------
// The Rust side decides; the page polls it, reports activity, and on lock
// clears every patient text before asking for the passphrase.

const lockDialog = document.getElementById("lock-dialog") as HTMLDialogElement;
const lockButton = document.getElementById("lock-button") as HTMLButtonElement;
const unlockField = document.getElementById("unlock-passphrase") as HTMLInputElement;
const unlockError = document.getElementById("unlock-error") as HTMLElement;
/** "setup": no passphrase yet, but IT requires the lock: choose one first. */
let lockMode: "unlock" | "setup" | null = null;

function showLockDialog(mode: "unlock" | "setup", lock: LockStatus): void {
  const idleMinutes = lock.idle_minutes;
  // Setting up happens before any patient text is shown (and must not close
  // the first-run recovery key dialog).
  if (mode === "unlock") {
    noteLock();
    clearPatientText();
    clearBatch();
    clearHistoryScreen();
    lastResult = null;
  }
  lockMode = mode;
  (document.getElementById("lock-title") as HTMLElement).textContent =
    mode === "unlock" ? "MedText is locked" : "Choose an unlock passphrase";
  const secret =
    lock.method === "os" ? `the password of your computer account (${lock.os_user ?? "this user"})` : "your unlock passphrase";
  (document.getElementById("lock-explanation") as HTMLElement).textContent =
    mode === "unlock"
      ? `Patient text was removed from the screen. Enter ${secret} to go on.`
      : `MedText locks after ${idleMinutes ?? "some"} minutes without use. Choose the passphrase (at least 8 characters) that unlocks it.`;
  (document.getElementById("unlock-label") as HTMLElement).textContent =
    lock.method === "os" && mode === "unlock" ? "Computer account password" : "Unlock passphrase";
  (document.getElementById("unlock-button") as HTMLButtonElement).textContent =
    mode === "unlock" ? "Unlock" : "Set passphrase";
  unlockField.autocomplete = mode === "unlock" ? "current-password" : "new-password";
  unlockField.minLength = mode === "unlock" ? 0 : 8;
  unlockError.hidden = true;
  if (!lockDialog.open) lockDialog.showModal();
  unlockField.focus();
}

/** Shows the lock screen if the Rust side says the app is locked. */
async function checkLock(): Promise<LockStatus> {
  const lock = await invokeNoPatientText<LockStatus>("lock_status");
  lockButton.disabled = !canUnlock(lock);
  if (lock.locked && lockMode === null) showLockDialog("unlock", lock);
  else if (!canUnlock(lock) && lock.idle_minutes !== null && lockMode === null) showLockDialog("setup", lock);
  return lock;
}

/** Whether unlocking is possible: by the OS account, or a passphrase set. */
function canUnlock(lock: LockStatus): boolean {
  return lock.method === "os" || lock.has_passphrase;
}

/** True (and the lock screen shown) when `e` is the locked refusal. */
async function lockedOut(e: unknown): Promise<boolean> {
  if (typeof e !== "string" || !e.startsWith("MedText is locked")) return false;
  await checkLock();
  return true;
}

// The dialog may not be dismissed with Escape.
lockDialog.addEventListener("cancel", (e) => e.preventDefault());
(document.getElementById("unlock-form") as HTMLFormElement).addEventListener("submit", (e) => {
  e.preventDefault();
  const passphrase = unlockField.value;
  const steps =
    lockMode === "setup"
      ? invokeNoPatientText("set_unlock_passphrase", { current: null, passphrase }).then(() =>
          invokeNoPatientText("unlock", { passphrase }).catch(() => undefined),
        )
      : invokeNoPatientText("unlock", { passphrase });
  void steps
    .then(async () => {
      unlockField.value = "";
      lockMode = null;
      lockDialog.close();
      await showRecoveryKey();
      await refreshHistory();
      await loadSecurity();
    })
    .catch((err: unknown) => {
      unlockField.value = "";
      unlockError.textContent = errorText(err);
      unlockError.hidden = false;
    });
});

async function lockNow(): Promise<void> {
  await invokeNoPatientText("lock_now");
  await checkLock();
}
lockButton.addEventListener("click", () => void lockNow());
document.addEventListener("keydown", (e) => {
  if (e.key === "l" && (e.ctrlKey || e.metaKey) && !lockButton.disabled) {
    e.preventDefault();
    void lockNow();
  }
});
const reportActivity = throttle(() => void invokeNoPatientText("activity"), 20_000);
for (const kind of ["keydown", "pointerdown", "input", "wheel"]) {
  document.addEventListener(kind, () => {
    if (lockMode === null) reportActivity();
  });
}
setInterval(() => void checkLock().catch(() => undefined), 10_000);

const idleSelect = document.getElementById("idle-select") as HTMLSelectElement;
const securityStatus = document.getElementById("security-status") as HTMLElement;

/** Fills the "Privacy and security" panel from the app's status. */
async function loadSecurity(): Promise<void> {
  const s = await invoke<AppStatus>("app_status");
  (document.getElementById("network-statement") as HTMLElement).textContent = await invoke<string>("network_check").then(
    (ok) => `Nothing leaves this computer. MedText contains no network code (checked when it was built), and now: ${ok}.`,
    (err: unknown) => `Network check: ${errorText(err)}`,
  );
  if ("Ok" in s.policy) {
    const lines = managedLines(s.policy.Ok);
    (document.getElementById("policy-source") as HTMLElement).textContent =
      lines.length > 0
        ? `Set by your IT department (${s.policy.Ok.source ?? "machine policy"}):`
        : "No setting is fixed by your IT department.";
    (document.getElementById("managed-list") as HTMLElement).replaceChildren(
      ...lines.map((line) => {
        const li = document.createElement("li");
        li.textContent = line;
        return li;
      }),
    );
  }
  idleSelect.value = s.lock.idle_minutes === null ? "" : String(s.lock.idle_minutes);
  if (idleSelect.value === "" && s.lock.idle_minutes !== null) {
    // A value IT chose that is not in the list.
    idleSelect.add(new Option(`${s.lock.idle_minutes} minutes without use`, String(s.lock.idle_minutes)));
    idleSelect.value = String(s.lock.idle_minutes);
  }
  idleSelect.disabled = s.lock.idle_managed;
  idleSelect.title = s.lock.idle_managed ? "Set by your IT department" : "";
  (document.getElementById("current-passphrase-label") as HTMLElement).hidden = !s.lock.has_passphrase;
  (document.getElementById("passphrase-form") as HTMLElement).hidden = s.lock.method === "os";
  lockButton.disabled = !canUnlock(s.lock);
  (document.getElementById("log-file") as HTMLElement).textContent =
    "Ok" in s.log_file ? `Log (no patient text): ${s.log_file.Ok}` : `No log: ${s.log_file.Err}`;
}

idleSelect.addEventListener("change", () => {
  const minutes = idleSelect.value === "" ? null : Number(idleSelect.value);
  void invokeNoPatientText<LockStatus>("set_idle_lock_minutes", { minutes })
    .then(() => {
      securityStatus.textContent = minutes === null ? "Idle lock off." : `Locks after ${minutes} minutes without use.`;
    })
    .catch(async (err: unknown) => {
      securityStatus.textContent = errorText(err);
      await loadSecurity();
    });
});
(document.getElementById("passphrase-form") as HTMLFormElement).addEventListener("submit", (e) => {
  e.preventDefault();
  const currentField = document.getElementById("current-passphrase") as HTMLInputElement;
  const newField = document.getElementById("new-passphrase") as HTMLInputElement;
  const current = currentField.value === "" ? null : currentField.value;
  void invokeNoPatientText("set_unlock_passphrase", { current, passphrase: newField.value })
    .then(async () => {
      securityStatus.textContent = "Unlock passphrase set.";
      await loadSecurity();
    })
    .catch((err: unknown) => {
      securityStatus.textContent = errorText(err);
    })
    .finally(() => {
      currentField.value = "";
      newField.value = "";
    });
});

async function classify(): Promise<void> {
  const text = input.value;
  const problem = inputProblem(text, maxChars);
  if (problem) {
    forgetResult();
    showError(problem);
    return;
  }
  showError(null);
  // Click to result on screen, for the end-to-end test's timing figure.
  const clicked = performance.now();
  button.disabled = true;
  button.textContent = "Classifying…";
  try {
    const r = await invoke<ClassifyResponse>("classify", { text });
    renderResult(r.classification);
    renderEvidence(text, []);
    const shown = { classification: r.classification, savedId: r.saved_id };
    lastResult = shown;
    showFeedbackForm(r.classification, r.saved_id);
    performance.measure("medtext-classify", { start: clicked, end: performance.now() });
    void showEvidence(text, shown);
    if (r.save_error) showError(`Result shown but not saved: ${r.save_error}`);
    await refreshHistory();
  } catch (e) {
    forgetResult();
    if (!(await lockedOut(e))) showError(errorText(e));
  } finally {
    button.disabled = false;
    button.textContent = "Classify";
  }
}

/** Takes the last result off the screen, so that a note that could not be
 * classified is never shown beside the label of the one before it. */
function forgetResult(): void {
  lastResult = null;
  for (const id of ["result", "result-evidence-block", "feedback-form"]) {
    (document.getElementById(id) as HTMLElement).hidden = true;
  }
}

/** Asks for the evidence of the result just shown, and marks it in the text
 * unless another result has replaced it meanwhile. */
async function showEvidence(text: string, shown: NonNullable<typeof lastResult>): Promise<void> {
  const note = document.getElementById("evidence-pending") as HTMLElement;
  note.hidden = false;
  try {
    const evidence = await invoke<WordEvidence[]>("explain", { text, savedId: shown.savedId });
    if (lastResult === shown) renderEvidence(text, evidence);
  } catch (e) {
    if (lastResult === shown && !(await lockedOut(e))) showError(`Evidence unavailable: ${errorText(e)}`);
  } finally {
    if (lastResult === shown) note.hidden = true;
  }
}

function showModel(m: ModelInfo): void {
  current = m;
  status.textContent = `${m.pack} ${m.version} · ${m.task} · offline`;
  button.disabled = false;
}

/** Thrown to stop start-up when the machine policy is unusable. */
class PolicyRefused extends Error {}

async function loadStatus(): Promise<void> {
  const s = await invoke<AppStatus>("app_status");
  if ("Err" in s.policy) {
    (document.getElementById("policy-error") as HTMLElement).textContent = s.policy.Err;
    const dialog = document.getElementById("policy-dialog") as HTMLDialogElement;
    dialog.addEventListener("cancel", (e) => e.preventDefault());
    dialog.showModal();
    status.textContent = "Stopped by the machine policy";
    throw new PolicyRefused();
  }
  maxChars = s.max_text_chars;
  if ("Ok" in s.model) {
    showModel(s.model.Ok);
  } else {
    status.textContent = "Model not loaded";
    showError(s.model.Err);
    button.disabled = true;
  }
  if ("Err" in s.history) {
    showError(`History unavailable: ${s.history.Err}`);
    // A key that is missing or does not fit can be replaced by the recovery key.
    if (/key/i.test(s.history.Err)) (document.getElementById("recover-form") as HTMLFormElement).hidden = false;
  }
}

const recoverForm = document.getElementById("recover-form") as HTMLFormElement;
recoverForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const field = document.getElementById("recover-key") as HTMLInputElement;
  void invokeNoPatientText("recover_history", { recoveryKey: field.value })
    .then(async () => {
      field.value = "";
      recoverForm.hidden = true;
      showError(null);
      await refreshHistory();
      await watchIntegrity();
    })
    .catch((err: unknown) => showError(errorText(err)));
});

async function loadPacks(): Promise<void> {
  const list = await invoke<PackList>("list_packs");
  packs = list;
  renderPackChoices(list, current);
  renderModelCards(list, current, (pack, head) => void selectPack(pack, head));
  fillHistoryFilters(list);
  if (list.broken.length > 0) showError(`Some model packs cannot be used: ${list.broken.join("; ")}`);
}

async function selectPack(pack: string, head: string): Promise<void> {
  packSelect.disabled = true;
  try {
    showModel(await invokeNoPatientText<ModelInfo>("select_pack", { pack, head }));
    showError(null);
  } catch (e) {
    // The pack in use is unchanged: say why and point the picker back at it.
    showError(`${errorText(e)} (still using ${current?.pack ?? "no model"})`);
  } finally {
    await loadPacks();
  }
}

const trainForm = document.getElementById("train-form") as HTMLFormElement;
const trainButton = document.getElementById("train-button") as HTMLButtonElement;
const trainBar = document.getElementById("train-progress") as HTMLProgressElement;
const trainStatus = document.getElementById("train-status") as HTMLElement;
let trainedPack: string | null = null;

function field(id: string): string {
  return (document.getElementById(id) as HTMLInputElement | HTMLSelectElement).value.trim();
}

async function train(): Promise<void> {
  const file = (document.getElementById("train-file") as HTMLInputElement).files?.[0];
  if (!file) return;
  const name = field("train-name");
  trainButton.disabled = true;
  (document.getElementById("train-result") as HTMLElement).hidden = true;
  trainBar.hidden = false;
  trainBar.value = 0;
  trainStatus.textContent = "Sending the file to the trainer…";
  const lockedSince = lockWatch();
  try {
    // Raw bytes, so the trainer itself checks the encoding and names bad rows.
    const kind = /\.(jsonl|ndjson)$/i.test(file.name) ? "jsonl" : "csv";
    await invoke("stage_training_file", new Uint8Array(await file.arrayBuffer()), {
      headers: { "x-file-kind": kind },
    });
    const onProgress = new Channel<TrainProgress>();
    onProgress.onmessage = (p) => {
      const shown = trainingProgress(p);
      trainBar.value = shown.fraction;
      trainStatus.textContent = shown.text;
    };
    const outcome = await invokeNoPatientText<TrainOutcome>("train_pack", {
      options: {
        name,
        textColumn: field("train-text-column"),
        labelColumn: field("train-label-column"),
        headKind: field("train-head-kind"),
      },
      onProgress,
    });
    trainBar.value = 1;
    trainStatus.textContent = `Model “${name}” is installed. Check its figures before you use it.`;
    trainedPack = name;
    await loadPacks();
    // Not drawn behind the lock; the Models screen shows the pack's figures.
    if (!lockedSince()) renderTrainResult(outcome);
  } catch (e) {
    trainBar.hidden = true;
    trainStatus.textContent = "";
    if (lockedSince() || (await lockedOut(e))) {
      // Nothing of the run is drawn behind the lock.
      trainStatus.textContent = "Training stopped while MedText was locked. Start it again.";
    } else {
      showError(`Training failed: ${errorText(e)}`);
    }
  } finally {
    trainButton.disabled = false;
  }
}

trainForm.addEventListener("submit", (e) => {
  e.preventDefault();
  void train();
});
(document.getElementById("train-use") as HTMLButtonElement).addEventListener("click", () => {
  if (trainedPack !== null) void selectPack(trainedPack, "category");
});

input.addEventListener("input", () => {
  count.textContent = `${[...input.value].length.toLocaleString("en")} characters`;
});
input.addEventListener("keydown", (e) => {
  // Not while a classification runs: the button is disabled then, and two
  // at once could show the older result last.
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !button.disabled) void classify();
});
button.addEventListener("click", () => void classify());
packSelect.addEventListener("change", () => {
  const [pack, head] = JSON.parse(packSelect.value) as [string, string];
  void selectPack(pack, head);
});

/** Waits for the start-up integrity check of the history; says if it failed. */
async function watchIntegrity(): Promise<void> {
  for (let i = 0; i < 120; i++) {
    const s = await invoke<AppStatus>("app_status");
    if (s.history_integrity !== null) {
      if ("Err" in s.history_integrity) showError(s.history_integrity.Err);
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** A history created at this start has a recovery key to show, once: at
 * start, or after the first unlock when the app started locked (IT's
 * `unlock = "os"` locks even a new history). */
async function showRecoveryKey(): Promise<void> {
  const key = await invoke<string | null>("take_recovery_key").catch(async (e: unknown) => {
    if (await lockedOut(e)) return null;
    throw e;
  });
  if (key === null) return;
  const dialog = document.getElementById("recovery-dialog") as HTMLDialogElement;
  (document.getElementById("recovery-key") as HTMLElement).textContent = key;
  (document.getElementById("recovery-done") as HTMLButtonElement).addEventListener("click", () => dialog.close(), {
    once: true,
  });
  dialog.showModal();
}

// ---- Copy, feedback, opening files -------------------------------------------

const copyStatus = document.getElementById("copy-status") as HTMLElement;
(document.getElementById("copy-result") as HTMLButtonElement).addEventListener("click", () => {
  if (!lastResult) return;
  const text = resultSummary(lastResult.classification);
  const done = () => (copyStatus.textContent = "Copied.");
  const fallback = () => {
    // WebKit may refuse the async clipboard: copy through a hidden field.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    copyStatus.textContent = ok ? "Copied." : "Copying is not allowed here.";
  };
  if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, fallback);
  else fallback();
});

const feedbackForm = document.getElementById("feedback-form") as HTMLFormElement;
const feedbackStatus = document.getElementById("feedback-status") as HTMLElement;

/** Offers agree / correct for a saved result, with the head's labels. */
function showFeedbackForm(c: Classification, savedId: number | null): void {
  feedbackStatus.textContent = "";
  (document.getElementById("feedback-note") as HTMLInputElement).value = "";
  feedbackForm.hidden = savedId === null;
  const head = packs.packs.find((p) => p.pack === c.pack)?.heads.find((h) => h.name === c.head);
  const names: [string, string][] = head?.label_names ?? c.probabilities.map((l) => [l.id, l.display]);
  const select = document.getElementById("feedback-label") as HTMLSelectElement;
  select.replaceChildren(...names.filter(([id]) => id !== c.top.id).map(([id, name]) => new Option(name, id)));
}

async function sendFeedback(verdict: "agree" | "corrected"): Promise<void> {
  if (lastResult?.savedId == null) return;
  const note = (document.getElementById("feedback-note") as HTMLInputElement).value.trim();
  const label = (document.getElementById("feedback-label") as HTMLSelectElement).value;
  try {
    await invoke("set_feedback", {
      id: lastResult.savedId,
      feedback: { verdict, corrected_label: verdict === "corrected" ? label : null, note: note || null },
    });
    feedbackStatus.textContent =
      verdict === "agree" ? "Thank you: kept as agreed." : "Thank you: the correction is kept with the record.";
  } catch (e) {
    if (!(await lockedOut(e))) feedbackStatus.textContent = errorText(e);
  }
}
(document.getElementById("feedback-agree") as HTMLButtonElement).addEventListener("click", () => void sendFeedback("agree"));
feedbackForm.addEventListener("submit", (e) => {
  e.preventDefault();
  void sendFeedback("corrected");
});

/** Puts a dropped or opened .txt file in the text box (UTF-8 only, said plainly otherwise). */
async function openTextFile(file: File): Promise<void> {
  if (file.size > maxChars * 4) {
    showError(`${file.name} is too large: the longest text MedText classifies is ${maxChars.toLocaleString("en")} characters.`);
    return;
  }
  // A file picker left open can return after the app has locked.
  const lockedSince = lockWatch();
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
  } catch {
    if (!lockedSince()) showError(`${file.name} is not UTF-8 text: save it as UTF-8 and open it again.`);
    return;
  }
  if (lockedSince()) return;
  input.value = text;
  input.dispatchEvent(new Event("input"));
  showError(null);
  input.focus();
}
const openFile = document.getElementById("open-file") as HTMLInputElement;
openFile.addEventListener("change", () => {
  const file = openFile.files?.[0];
  if (file) void openTextFile(file).finally(() => (openFile.value = ""));
});
input.addEventListener("dragover", (e) => {
  e.preventDefault();
  input.classList.add("dropping");
});
input.addEventListener("dragleave", () => input.classList.remove("dropping"));
input.addEventListener("drop", (e) => {
  e.preventDefault();
  input.classList.remove("dropping");
  const file = e.dataTransfer?.files[0];
  if (file) void openTextFile(file);
});

// ---- Importing a pack ---------------------------------------------------------

const importForm = document.getElementById("import-form") as HTMLFormElement;
const importStatus = document.getElementById("import-status") as HTMLElement;
importForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const archive = (document.getElementById("import-archive") as HTMLInputElement).files?.[0];
  const sig = (document.getElementById("import-signature") as HTMLInputElement).files?.[0];
  if (!archive) return;
  const importButton = document.getElementById("import-button") as HTMLButtonElement;
  importButton.disabled = true;
  importStatus.className = "";
  importStatus.textContent = `Checking and installing ${archive.name}…`;
  void (async () => {
    const headers: Record<string, string> = sig ? { "x-signature": signatureHeader(await sig.text()) } : {};
    const done = await invokeNoPatientText<{ pack: string; version: string; signer: string | null }>(
      "import_pack",
      new Uint8Array(await archive.arrayBuffer()),
      { headers },
    );
    importStatus.textContent =
      `Installed ${done.pack} ${done.version}` + (done.signer ? `, signed by ${done.signer}.` : " (unsigned).");
    importForm.reset();
    await loadPacks();
  })()
    .catch((err: unknown) => {
      importStatus.className = "error";
      importStatus.textContent = `Not imported: ${errorText(err)}`;
    })
    .finally(() => (importButton.disabled = false));
});

// ---- Screens ------------------------------------------------------------------

const historyScreen = initHistoryScreen((e) => {
  void lockedOut(e).then((locked) => {
    if (!locked) (document.getElementById("history-message") as HTMLElement).textContent = errorText(e);
  });
});
initBatchScreen(lockedOut);
initSettingsScreen();
followHash((screen) => {
  const loads: Record<string, () => Promise<void>> = {
    history: historyScreen.refresh,
    models: loadPacks,
    settings: async () => {
      await loadSettings();
      await loadSecurity();
    },
  };
  void loads[screen]?.().catch((e: unknown) => showError(errorText(e)));
});

// The window answers input from here on; the model may still be loading.
performance.mark("medtext-interactive");
loadStatus()
  .then(() => performance.mark("medtext-ready"))
  .then(showRecoveryKey)
  .then(checkLock)
  .then(loadSecurity)
  .then(loadPacks)
  .then(refreshHistory)
  .then(watchIntegrity)
  .catch((e: unknown) => {
    if (e instanceof PolicyRefused) return;
    status.textContent = "Not ready";
    showError(errorText(e));
  });
