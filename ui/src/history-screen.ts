// The History screen's IPC: search with filters and paging, open a record,
// delete and export a selection.

import { invoke, invokeNoPatientText } from "./ipc";
import { countLine, hasOlder, PAGE_SIZE, queryFrom, renderDetail, renderRows, type SearchForm } from "./history";
import type { HistoryPage, HistoryRecord, PackList } from "./types";
import { $ } from "./dom";

let offset = 0;
let page: HistoryPage = { entries: [], total: 0, more_than_total: false };
const selected = new Set<number>();

function form(): SearchForm {
  return {
    text: $<HTMLInputElement>("history-text").value,
    pack: $<HTMLSelectElement>("history-pack").value,
    label: $<HTMLSelectElement>("history-label").value,
    feedback: $<HTMLSelectElement>("history-feedback").value,
    from: $<HTMLInputElement>("history-from").value,
    until: $<HTMLInputElement>("history-until").value,
  };
}

function updateActions(): void {
  $<HTMLButtonElement>("history-delete").disabled = selected.size === 0;
  $<HTMLButtonElement>("history-export").disabled = selected.size === 0;
  const all = $<HTMLInputElement>("history-select-all");
  all.checked = page.entries.length > 0 && page.entries.every((e) => selected.has(e.id));
}

function say(message: string): void {
  $("history-message").textContent = message;
}

/** Count searches and records opened, so that only the latest reply is
 * drawn (and none for a record closed before it came). */
let searches = 0;
let openings = 0;

/** Loads the page at `at` of the current search. */
async function load(at: number, onError: (e: unknown) => void): Promise<void> {
  const search = ++searches;
  try {
    const reply = await invoke<HistoryPage>("search_history", { query: queryFrom(form(), at) });
    if (search !== searches) return;
    page = reply;
    offset = at;
    renderRows(page, selected);
    $("history-count").textContent = countLine(page, offset);
    $("history-page").textContent = page.entries.length ? `page ${Math.floor(offset / PAGE_SIZE) + 1}` : "";
    $<HTMLButtonElement>("history-prev").disabled = offset === 0;
    $<HTMLButtonElement>("history-next").disabled = !hasOlder(page, offset);
    updateActions();
  } catch (e) {
    if (search === searches) onError(e);
  }
}

/** Forgets the page of records and the selection (the lock calls this), so
 * that nothing can be exported or deleted after it that is not on screen. */
export function clearHistoryScreen(): void {
  searches += 1;
  page = { entries: [], total: 0, more_than_total: false };
  offset = 0;
  selected.clear();
  $("history-delete-confirm").hidden = true;
  $("history-page").textContent = "";
  say("");
  updateActions();
}

/** Model and label filter choices: every installed pack, and every label of them once. */
export function fillHistoryFilters(list: PackList): void {
  const packSelect = $<HTMLSelectElement>("history-pack");
  const keepPack = packSelect.value;
  packSelect.replaceChildren(new Option("Any model", ""), ...list.packs.map((p) => new Option(p.pack, p.pack)));
  packSelect.value = keepPack;
  const select = $<HTMLSelectElement>("history-label");
  const keep = select.value;
  const seen = new Map<string, string>();
  for (const p of list.packs) for (const h of p.heads) for (const [id, name] of h.label_names) seen.set(id, name);
  const options = [...seen].sort((a, b) => a[1].localeCompare(b[1])).map(([id, name]) => new Option(name, id));
  select.replaceChildren(new Option("Any label", ""), ...options);
  select.value = keep;
}

export function initHistoryScreen(onError: (e: unknown) => void): { refresh: () => Promise<void> } {
  $<HTMLFormElement>("history-search").addEventListener("submit", (e) => {
    e.preventDefault();
    selected.clear();
    say("");
    void load(0, onError);
  });
  $("history-prev").addEventListener("click", () => void load(Math.max(0, offset - PAGE_SIZE), onError));
  $("history-next").addEventListener("click", () => void load(offset + PAGE_SIZE, onError));
  $("history-rows").addEventListener("change", (e) => {
    const box = e.target as HTMLInputElement;
    const id = Number(box.closest("tr")?.dataset.recordId);
    if (box.checked) selected.add(id);
    else selected.delete(id);
    updateActions();
  });
  $("history-select-all").addEventListener("change", () => {
    const on = $<HTMLInputElement>("history-select-all").checked;
    for (const e of page.entries) {
      if (on) selected.add(e.id);
      else selected.delete(e.id);
    }
    renderRows(page, selected);
    updateActions();
  });
  $("history-rows").addEventListener("click", (e) => {
    const open = (e.target as HTMLElement).closest(".open-record");
    const id = Number(open?.closest("tr")?.dataset.recordId);
    if (!open || !id) return;
    const opening = ++openings;
    void invoke<HistoryRecord>("history_record", { id })
      .then((r) => {
        if (opening !== openings) return;
        renderDetail(r);
        $("detail-close").focus();
      })
      .catch(onError);
  });
  $("detail-close").addEventListener("click", () => {
    openings += 1;
    $("history-detail").hidden = true;
    $("detail-text").replaceChildren();
  });
  // Deleting asks first, in the page (no browser dialog).
  const confirmBox = $("history-delete-confirm");
  $("history-delete").addEventListener("click", () => {
    $("delete-question").textContent =
      `Delete ${selected.size} record(s) from the history? This cannot be undone.`;
    confirmBox.hidden = false;
    $("history-delete-no").focus();
  });
  $("history-delete-no").addEventListener("click", () => {
    confirmBox.hidden = true;
  });
  $("history-delete-yes").addEventListener("click", () => {
    confirmBox.hidden = true;
    void invokeNoPatientText<number>("delete_records", { ids: [...selected] })
      .then(async (n) => {
        selected.clear();
        say(`Deleted ${n} record(s).`);
        await load(offset, onError);
      })
      .catch(onError);
  });
  $("history-export").addEventListener("click", () => {
    const format = $<HTMLSelectElement>("history-export-format").value;
    void invokeNoPatientText<{ path: string; records: number }>("export_records", { ids: [...selected], format })
      .then((r) => say(`Exported ${r.records} record(s) to ${r.path}. The file is not encrypted: keep it safe.`))
      .catch((e: unknown) => say(typeof e === "string" ? e : "The export failed."));
  });
  return { refresh: () => load(offset, onError) };
}
