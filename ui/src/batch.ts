// The Batch screen's logic: reading a folder of .txt files, cutting the
// work into parts, progress with an ETA, and the results table.

import { percent } from "./render";
import type { BatchRow } from "./types";

/** Texts per call to Rust (medtext_core::batch::MAX_TEXTS_PER_CALL). */
export const PART = 64;

export interface BatchItem {
  name: string;
  /** The text, or why the file could not be read. */
  text: string | null;
  problem?: string;
}

/** A file's bytes (through FileReader, which every webview has). */
export function bytesOf(file: Blob): Promise<ArrayBuffer> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result as ArrayBuffer);
    reader.onerror = () => reject(reader.error);
    reader.readAsArrayBuffer(file);
  });
}

/** The .txt files of a folder, read as UTF-8 (others are named as problems). */
export async function readTextFiles(files: File[]): Promise<BatchItem[]> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const txt = files
    .filter((f) => /\.txt$/i.test(f.name))
    .sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name));
  return Promise.all(
    txt.map(async (f) => {
      const name = f.webkitRelativePath || f.name;
      try {
        return { name, text: decoder.decode(new Uint8Array(await bytesOf(f))) };
      } catch {
        return { name, text: null, problem: "not UTF-8 text: save it as UTF-8" };
      }
    }),
  );
}

/** "120 of 400 · about 2 min left": `started` and `now` in ms. */
export function progressLine(done: number, total: number, started: number, now: number): string {
  const head = `${done.toLocaleString("en")} of ${total.toLocaleString("en")}`;
  if (done === 0 || done >= total) return head;
  const left = ((now - started) / done) * (total - done) / 1000;
  const eta = left < 60 ? `${Math.max(1, Math.ceil(left))} s` : `${Math.ceil(left / 60)} min`;
  return `${head} · about ${eta} left`;
}

/** Appends result rows to the table (as text). */
export function appendRows(rows: BatchRow[], doc: Document = document): void {
  const body = doc.getElementById("batch-rows") as HTMLElement;
  for (const r of rows) {
    const tr = doc.createElement("tr");
    for (const value of [
      r.name,
      r.label ?? "",
      r.probability === null ? "" : percent(r.probability),
      r.needs_review ? "needs review" : "",
      r.error ?? "",
    ]) {
      tr.insertCell().textContent = value;
    }
    if (r.error) tr.className = "failed";
    body.append(tr);
  }
}
