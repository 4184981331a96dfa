// The Batch screen's IPC: read the texts, classify them part by part with
// progress and Cancel, save the results as CSV.

import { invoke } from "./ipc";
import { appendRows, PART, progressLine, readTextFiles, type BatchItem } from "./batch";
import type { BatchRow } from "./types";
import { $ } from "./dom";

let cancelled = false;
let results: BatchRow[] = [];

async function itemsToClassify(): Promise<BatchItem[]> {
  const folder = [...($<HTMLInputElement>("batch-folder").files ?? [])];
  if (folder.length > 0) return readTextFiles(folder);
  const file = $<HTMLInputElement>("batch-file").files?.[0];
  if (!file) throw "Choose a folder of .txt files or a CSV or JSONL file first.";
  const texts = await invoke<string[]>("read_batch_file", new Uint8Array(await file.arrayBuffer()), {
    headers: {
      "x-file-kind": /\.(jsonl|ndjson)$/i.test(file.name) ? "jsonl" : "csv",
      "x-text-column": $<HTMLInputElement>("batch-column").value.trim(),
    },
  });
  return texts.map((text, i) => ({ name: `row ${i + 1}`, text }));
}

async function run(onError: (e: unknown) => Promise<boolean>): Promise<void> {
  const start = $<HTMLButtonElement>("batch-start");
  const cancel = $<HTMLButtonElement>("batch-cancel");
  const bar = $<HTMLProgressElement>("batch-progress");
  const status = $("batch-status");
  cancelled = false;
  results = [];
  $("batch-rows").replaceChildren();
  $("batch-saved").textContent = "";
  start.disabled = true;
  cancel.disabled = false;
  try {
    status.textContent = "Reading the texts…";
    const items = await itemsToClassify();
    if (items.length === 0) throw "There is no .txt file in that folder.";
    const save = $<HTMLInputElement>("batch-save").checked;
    const began = Date.now();
    bar.hidden = false;
    bar.max = items.length;
    $("batch-results").hidden = false;
    for (let at = 0; at < items.length && !cancelled; at += PART) {
      const part = items.slice(at, at + PART);
      const unreadable = part.filter((i) => i.text === null);
      const readable = part.filter((i) => i.text !== null);
      const rows = await invoke<BatchRow[]>("classify_batch", {
        names: readable.map((i) => i.name),
        texts: readable.map((i) => i.text),
        save,
      });
      const failed: BatchRow[] = unreadable.map((i) => ({
        name: i.name,
        label_id: null,
        label: null,
        probability: null,
        needs_review: false,
        saved_id: null,
        error: i.problem ?? "unreadable",
      }));
      results.push(...rows, ...failed);
      appendRows([...rows, ...failed]);
      bar.value = Math.min(items.length, at + PART);
      status.textContent = progressLine(bar.value, items.length, began, Date.now());
    }
    const failures = results.filter((r) => r.error).length;
    status.textContent = cancelled
      ? `Cancelled after ${results.length.toLocaleString("en")} of ${items.length.toLocaleString("en")} texts.`
      : `Done: ${results.length.toLocaleString("en")} texts${failures ? `, ${failures} with a problem` : ""}.`;
  } catch (e) {
    if (!(await onError(e))) status.textContent = typeof e === "string" ? e : "The batch stopped.";
  } finally {
    start.disabled = false;
    cancel.disabled = true;
  }
}

export function initBatchScreen(onError: (e: unknown) => Promise<boolean>): void {
  $<HTMLFormElement>("batch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void run(onError);
  });
  $("batch-cancel").addEventListener("click", () => {
    cancelled = true;
    $("batch-status").textContent = "Cancelling after the part in progress…";
  });
  // One source at a time: choosing a folder clears the file, and back.
  $("batch-folder").addEventListener("change", () => ($<HTMLInputElement>("batch-file").value = ""));
  $("batch-file").addEventListener("change", () => ($<HTMLInputElement>("batch-folder").value = ""));
  $("batch-save-csv").addEventListener("click", () => {
    void invoke<string>("save_batch_results", { rows: results })
      .then((path) => ($("batch-saved").textContent = `Saved to ${path} (not encrypted).`))
      .catch((e: unknown) => ($("batch-saved").textContent = typeof e === "string" ? e : "Not saved."));
  });
}

/** Forgets the results (the lock calls this: file names may name patients). */
export function clearBatch(): void {
  results = [];
}
