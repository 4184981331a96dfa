import { Channel, invoke } from "@tauri-apps/api/core";
import {
  inputProblem,
  renderEvidence,
  renderHistory,
  renderPackChoices,
  renderResult,
  renderTrainResult,
  showError,
  trainingProgress,
} from "./render";
import type {
  AppStatus,
  ClassifyResponse,
  HistoryEntry,
  ModelInfo,
  PackList,
  TrainOutcome,
  TrainProgress,
} from "./types";

const input = document.getElementById("note-input") as HTMLTextAreaElement;
const button = document.getElementById("classify-button") as HTMLButtonElement;
const count = document.getElementById("char-count") as HTMLElement;
const status = document.getElementById("status") as HTMLElement;
const packSelect = document.getElementById("pack-select") as HTMLSelectElement;
let maxChars = 100_000;
let current: ModelInfo | null = null;

function errorText(e: unknown): string {
  return typeof e === "string" ? e : "Something went wrong; please try again.";
}

async function refreshHistory(): Promise<void> {
  try {
    renderHistory(await invoke<HistoryEntry[]>("recent_history"));
  } catch (e) {
    showError(`History unavailable: ${errorText(e)}`);
  }
}

async function classify(): Promise<void> {
  const text = input.value;
  const problem = inputProblem(text, maxChars);
  if (problem) {
    showError(problem);
    return;
  }
  showError(null);
  button.disabled = true;
  button.textContent = "Classifying…";
  try {
    const r = await invoke<ClassifyResponse>("classify", { text });
    renderResult(r.classification);
    renderEvidence(text, r.classification.evidence ?? []);
    if (r.save_error) showError(`Result shown but not saved: ${r.save_error}`);
    await refreshHistory();
  } catch (e) {
    showError(errorText(e));
  } finally {
    button.disabled = false;
    button.textContent = "Classify";
  }
}

function showModel(m: ModelInfo): void {
  current = m;
  status.textContent = `${m.pack} ${m.version} · ${m.task} · offline`;
  button.disabled = false;
}

async function loadStatus(): Promise<void> {
  const s = await invoke<AppStatus>("app_status");
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
  void invoke("recover_history", { recoveryKey: field.value })
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
  renderPackChoices(list, current);
  if (list.broken.length > 0) showError(`Some model packs cannot be used: ${list.broken.join("; ")}`);
}

async function selectPack(pack: string, head: string): Promise<void> {
  packSelect.disabled = true;
  try {
    showModel(await invoke<ModelInfo>("select_pack", { pack, head }));
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
    const outcome = await invoke<TrainOutcome>("train_pack", {
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
    renderTrainResult(outcome);
  } catch (e) {
    trainBar.hidden = true;
    trainStatus.textContent = "";
    showError(`Training failed: ${errorText(e)}`);
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
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void classify();
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

/** A history created at this start has a recovery key to show, once. */
async function showRecoveryKey(): Promise<void> {
  const key = await invoke<string | null>("take_recovery_key");
  if (key === null) return;
  const dialog = document.getElementById("recovery-dialog") as HTMLDialogElement;
  (document.getElementById("recovery-key") as HTMLElement).textContent = key;
  (document.getElementById("recovery-done") as HTMLButtonElement).addEventListener("click", () => dialog.close(), {
    once: true,
  });
  dialog.showModal();
}

loadStatus()
  .then(showRecoveryKey)
  .then(loadPacks)
  .then(refreshHistory)
  .then(watchIntegrity)
  .catch((e: unknown) => {
    status.textContent = "Not ready";
    showError(errorText(e));
  });
