// Pure DOM rendering, kept apart from IPC so it can be tested in jsdom.
import type {
  Classification,
  HistoryEntry,
  LabelScore,
  ModelInfo,
  PackList,
  TrainOutcome,
  TrainProgress,
  WordEvidence,
} from "./types";

/** Words scoring at least this (of the strongest word's 1) are highlighted. */
export const EVIDENCE_THRESHOLD = 0.25;

export function percent(p: number): string {
  const v = Math.round(p * 1000) / 10;
  return `${v.toFixed(v >= 10 || v === 0 ? 0 : 1)}%`;
}

/** Checks typed text before a round trip to Rust; null when it may be sent. */
export function inputProblem(text: string, maxChars: number): string | null {
  if (text.trim().length === 0) return "Type or paste a note to classify.";
  const chars = [...text].length;
  if (chars > maxChars) {
    return `The text is ${chars.toLocaleString("en")} characters long, over the limit of ${maxChars.toLocaleString("en")}. Split it into parts and classify each.`;
  }
  return null;
}

/** One row of a probability list: name, bar, percentage. */
export function bar(label: LabelScore, doc: Document): HTMLLIElement {
  const li = doc.createElement("li");
  li.dataset.labelId = label.id;
  const name = doc.createElement("span");
  name.className = "bar-name";
  name.textContent = label.display;
  name.title = label.id;
  const track = doc.createElement("span");
  track.className = "bar-track";
  const fill = doc.createElement("span");
  fill.className = "bar-fill";
  fill.style.width = `${Math.max(0, Math.min(1, label.probability)) * 100}%`;
  track.append(fill);
  const value = doc.createElement("span");
  value.className = "bar-value";
  value.textContent = percent(label.probability);
  li.append(name, track, value);
  return li;
}

export function renderResult(c: Classification, doc: Document = document): void {
  const get = (id: string) => doc.getElementById(id) as HTMLElement;
  get("result-label").textContent = c.top.display;
  get("result-label").title = c.top.id;
  get("result-confidence").textContent = percent(c.top.probability);
  get("result-review").hidden = !c.needs_review;
  get("result-probabilities").replaceChildren(...c.probabilities.map((l) => bar(l, doc)));
  const windows = c.windows === 1 ? "" : ` in ${c.windows} overlapping windows`;
  get("result-meta").textContent = `${c.tokens} tokens${windows} · ${c.pack} ${c.pack_version}, head ${c.head}`;
  get("result").hidden = false;
}

/**
 * The classified text with the words that drove the top label marked.
 * Offsets count code points, as Rust's chars do; the text is only ever set
 * as text nodes, never parsed as HTML.
 */
export function renderEvidence(
  text: string,
  evidence: WordEvidence[],
  doc: Document = document,
): void {
  const { nodes, marked } = markedText(text, evidence, doc);
  (doc.getElementById("result-evidence") as HTMLElement).replaceChildren(...nodes);
  (doc.getElementById("result-evidence-block") as HTMLElement).hidden = marked === 0;
}

/**
 * `text` as text nodes, with the words whose evidence reaches
 * [`EVIDENCE_THRESHOLD`] in `<mark>`s (three strengths), and how many.
 */
export function markedText(
  text: string,
  evidence: WordEvidence[],
  doc: Document = document,
): { nodes: Node[]; marked: number } {
  const chars = [...text];
  const strong = evidence
    .filter((w) => w.score >= EVIDENCE_THRESHOLD && w.start < w.end && w.end <= chars.length)
    .sort((a, b) => a.start - b.start);
  const nodes: Node[] = [];
  let at = 0;
  let marked = 0;
  for (const w of strong) {
    if (w.start < at) continue;
    if (w.start > at) nodes.push(doc.createTextNode(chars.slice(at, w.start).join("")));
    const mark = doc.createElement("mark");
    mark.textContent = chars.slice(w.start, w.end).join("");
    // Stronger evidence, stronger colour: three steps keep contrast readable.
    mark.dataset.strength = w.score >= 0.75 ? "3" : w.score >= 0.5 ? "2" : "1";
    mark.title = `evidence ${Math.round(w.score * 100)}%`;
    nodes.push(mark);
    marked++;
    at = w.end;
  }
  if (at < chars.length) nodes.push(doc.createTextNode(chars.slice(at).join("")));
  return { nodes, marked };
}

/** One option per pack and head, the one in use selected. */
export function renderPackChoices(
  list: PackList,
  current: ModelInfo | null,
  doc: Document = document,
): void {
  const select = doc.getElementById("pack-select") as HTMLSelectElement;
  const options = list.packs.flatMap((p) =>
    p.heads.map((h) => {
      const o = doc.createElement("option");
      o.value = JSON.stringify([p.pack, h.name]);
      o.textContent = p.heads.length > 1 ? `${p.pack} · ${h.name}` : p.pack;
      o.title = `${p.task} (version ${p.version}, ${h.labels} labels)`;
      o.selected = current !== null && current.pack === p.pack && current.head === h.name;
      return o;
    }),
  );
  select.replaceChildren(...options);
  select.disabled = options.length === 0;
}

export function renderHistory(entries: HistoryEntry[], doc: Document = document): void {
  const list = doc.getElementById("history-list") as HTMLOListElement;
  list.replaceChildren(
    ...entries.map((e) => {
      const li = doc.createElement("li");
      li.dataset.recordId = String(e.id);
      const head = doc.createElement("div");
      head.className = "history-head";
      const label = doc.createElement("strong");
      label.textContent = e.top.display;
      const p = doc.createElement("span");
      p.className = "muted";
      p.textContent = ` ${percent(e.top.probability)}`;
      const when = doc.createElement("time");
      when.dateTime = new Date(e.created_at_ms).toISOString();
      when.textContent = new Date(e.created_at_ms).toLocaleString();
      head.append(label, p, when);
      const preview = doc.createElement("p");
      preview.className = "preview";
      preview.textContent = e.preview;
      li.append(head, preview);
      return li;
    }),
  );
  (doc.getElementById("history-empty") as HTMLElement).hidden = entries.length > 0;
}

export function showError(message: string | null, doc: Document = document): void {
  const el = doc.getElementById("error") as HTMLElement;
  el.textContent = message ?? "";
  el.hidden = message === null;
}

function duration(seconds: number): string {
  return seconds < 60 ? `${Math.max(1, Math.ceil(seconds))} s` : `${Math.ceil(seconds / 60)} min`;
}

/**
 * The training progress bar's fraction (reading the texts is most of the
 * work: 0..0.8, training the head 0.8..1) and the line under it.
 */
export function trainingProgress(p: TrainProgress): { fraction: number; text: string } {
  if (p.step === "embedding") {
    const fraction = p.total === 0 ? 1 : p.done / p.total;
    const cached = p.from_cache > 0 ? ` (${p.from_cache.toLocaleString("en")} already read before)` : "";
    const eta = p.done > 0 && p.eta_s !== null ? ` · about ${duration(p.eta_s)} left` : "";
    return {
      fraction: 0.8 * fraction,
      text: `Reading texts: ${p.done.toLocaleString("en")} of ${p.total.toLocaleString("en")}${cached}${eta}`,
    };
  }
  return {
    fraction: 0.8 + (0.2 * p.epoch) / Math.max(1, p.max_epochs),
    text: `Training: epoch ${p.epoch} of at most ${p.max_epochs} · at most ${duration(p.eta_s)} left`,
  };
}

function cell(row: HTMLTableRowElement, text: string, header = false): void {
  const c = row.ownerDocument.createElement(header ? "th" : "td");
  c.textContent = text;
  row.appendChild(c);
}

/** The new pack's figures on its held-out test part, per label too. */
export function renderTrainResult(o: TrainOutcome, doc: Document = document): void {
  const summary = doc.getElementById("train-summary") as HTMLElement;
  const left =
    o.removed_duplicates > 0 ? ` ${o.removed_duplicates.toLocaleString("en")} repeated rows were left out.` : "";
  summary.textContent =
    `On ${o.test.n.toLocaleString("en")} held-out examples: accuracy ${percent(o.test.accuracy)}, ` +
    `macro-F1 ${o.test.macro_f1.toFixed(3)}, calibration error ${o.test.ece.toFixed(3)}.${left}`;
  const table = doc.getElementById("train-figures") as HTMLTableElement;
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const h of ["Label", "Precision", "Recall", "F1", "Examples"]) cell(head, h, true);
  const body = table.createTBody();
  for (const c of o.test.per_class) {
    const row = body.insertRow();
    cell(row, c.label, true);
    cell(row, c.precision.toFixed(2));
    cell(row, c.recall.toFixed(2));
    cell(row, c.f1.toFixed(2));
    cell(row, c.support.toLocaleString("en"));
  }
  (doc.getElementById("train-result") as HTMLElement).hidden = false;
}

/** The result as plain text, for the clipboard: label, confidence, every probability. */
export function resultSummary(c: Classification): string {
  const lines = [
    `${c.top.display} (${c.top.id}) ${percent(c.top.probability)}${c.needs_review ? " - needs review" : ""}`,
    ...c.probabilities.map((l) => `  ${l.display}: ${percent(l.probability)}`),
    `Model: ${c.pack} ${c.pack_version}, head ${c.head} (MedText suggestion; a clinician decides)`,
  ];
  return lines.join("\n");
}
