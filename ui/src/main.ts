import { invoke } from "@tauri-apps/api/core";
import { inputProblem, renderHistory, renderResult, showError } from "./render";
import type { AppStatus, ClassifyResponse, HistoryEntry } from "./types";

const input = document.getElementById("note-input") as HTMLTextAreaElement;
const button = document.getElementById("classify-button") as HTMLButtonElement;
const count = document.getElementById("char-count") as HTMLElement;
const status = document.getElementById("status") as HTMLElement;
let maxChars = 100_000;

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
    if (r.save_error) showError(`Result shown but not saved: ${r.save_error}`);
    await refreshHistory();
  } catch (e) {
    showError(errorText(e));
  } finally {
    button.disabled = false;
    button.textContent = "Classify";
  }
}

async function loadStatus(): Promise<void> {
  const s = await invoke<AppStatus>("app_status");
  maxChars = s.max_text_chars;
  if ("Ok" in s.model) {
    const m = s.model.Ok;
    status.textContent = `${m.pack} ${m.version} · ${m.task} · offline`;
  } else {
    status.textContent = "Model not loaded";
    showError(s.model.Err);
    button.disabled = true;
  }
  if ("Err" in s.history) showError(`History unavailable: ${s.history.Err}`);
}

input.addEventListener("input", () => {
  count.textContent = `${[...input.value].length.toLocaleString("en")} characters`;
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void classify();
});
button.addEventListener("click", () => void classify());

loadStatus()
  .then(refreshHistory)
  .catch((e: unknown) => {
    status.textContent = "Not ready";
    showError(errorText(e));
  });
