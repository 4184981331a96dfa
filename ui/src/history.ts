// The History screen's logic and rendering, apart from IPC so jsdom tests
// can cover it. Record text is only ever set as text, never parsed as HTML.

import { bar, markedText, percent } from "./render";
import type { HistoryPage, HistoryQuery, HistoryRecord } from "./types";

/** Rows per page. */
export const PAGE_SIZE = 50;

export interface SearchForm {
  text: string;
  /** A pack name, or "" for any. */
  pack: string;
  label: string;
  feedback: string;
  /** `YYYY-MM-DD` from a date input, or "". */
  from: string;
  until: string;
}

/** Local midnight at the start of a `YYYY-MM-DD` day, in ms. */
function dayStart(day: string): number {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d).getTime();
}

/** The query for one page of the search the form describes. */
export function queryFrom(form: SearchForm, offset: number): HistoryQuery {
  const query: HistoryQuery = { offset, limit: PAGE_SIZE };
  if (form.text.trim()) query.text = form.text.trim();
  if (form.pack) query.pack = form.pack;
  if (form.label) query.label = form.label;
  if (form.feedback === "agree" || form.feedback === "corrected" || form.feedback === "none") {
    query.feedback = form.feedback;
  }
  if (form.from) query.from_ms = dayStart(form.from);
  // "Until" includes the whole day.
  if (form.until) query.to_ms = dayStart(form.until) + 24 * 60 * 60 * 1000 - 1;
  return query;
}

/** "Records 51–100 of 1,000+", or what to say when nothing matches. */
export function countLine(page: HistoryPage, offset: number): string {
  if (page.entries.length === 0) return offset === 0 ? "No records match." : "No more records.";
  const total = `${page.total.toLocaleString("en")}${page.more_than_total ? "+" : ""}`;
  const last = offset + page.entries.length;
  return `Records ${(offset + 1).toLocaleString("en")}–${last.toLocaleString("en")} of ${total}`;
}

/** Whether an older page may exist after this one. */
export function hasOlder(page: HistoryPage, offset: number): boolean {
  return offset + page.entries.length < page.total || page.more_than_total;
}

function feedbackWords(verdict: string | null | undefined): string {
  return verdict === "agree" ? "Agreed" : verdict === "corrected" ? "Corrected" : "";
}

/** The table rows of one page; `selected` ids have their box ticked. */
export function renderRows(page: HistoryPage, selected: Set<number>, doc: Document = document): void {
  const rows = page.entries.map((e) => {
    const tr = doc.createElement("tr");
    tr.dataset.recordId = String(e.id);
    const when = new Date(e.created_at_ms);
    const pick = doc.createElement("input");
    pick.type = "checkbox";
    pick.className = "pick";
    pick.checked = selected.has(e.id);
    pick.setAttribute("aria-label", `Select the record saved ${when.toLocaleString()}`);
    const open = doc.createElement("button");
    open.type = "button";
    open.className = "link open-record";
    open.textContent = e.preview;
    open.title = "Open this record";
    const time = doc.createElement("time");
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString();
    const cells: (Node | string)[] = [
      pick,
      time,
      e.top.display,
      percent(e.top.probability) + (e.needs_review ? " (review)" : ""),
      open,
      feedbackWords(e.feedback),
    ];
    for (const content of cells) {
      const td = doc.createElement("td");
      td.append(content);
      tr.append(td);
    }
    return tr;
  });
  (doc.getElementById("history-rows") as HTMLElement).replaceChildren(...rows);
  (doc.getElementById("history-none") as HTMLElement).hidden = rows.length > 0;
}

/** One record as it was classified: label, every probability, the text with its evidence. */
export function renderDetail(r: HistoryRecord, doc: Document = document): void {
  const get = (id: string) => doc.getElementById(id) as HTMLElement;
  get("detail-title").textContent = `${r.top.display} · ${percent(r.top.probability)}`;
  get("detail-meta").textContent =
    `Saved ${new Date(r.created_at_ms).toLocaleString()} · ${r.pack} ${r.pack_version}, head ${r.head}` +
    (r.needs_review ? " · needed review" : "");
  get("detail-probabilities").replaceChildren(...r.probabilities.map((l) => bar(l, doc)));
  get("detail-text").replaceChildren(...markedText(r.text, r.evidence, doc).nodes);
  const f = r.feedback_detail;
  get("detail-feedback").textContent = !f
    ? "No feedback yet."
    : f.verdict === "agree"
      ? `Agreed${f.note ? `: ${f.note}` : "."}`
      : `Corrected to ${f.corrected_label ?? "?"}${f.note ? `: ${f.note}` : "."}`;
  get("history-detail").hidden = false;
}
