// The Settings screen's history retention, theme and status facts. The
// lock and passphrase controls on it are wired with the lock (main.ts).

import { invoke } from "./ipc";
import type { About, AppStatus, HistorySettings } from "./types";
import { $ } from "./dom";

export type Theme = "system" | "light" | "dark";
const THEME_KEY = "medtext-theme";

/** Applies a theme: "system" follows the OS, the others force one. */
export function applyTheme(theme: Theme, doc: Document = document): void {
  if (theme === "system") delete doc.documentElement.dataset.theme;
  else doc.documentElement.dataset.theme = theme;
}

/** The saved theme choice (a display preference, not patient data). */
export function savedTheme(storage: Storage = localStorage): Theme {
  const v = storage.getItem(THEME_KEY);
  return v === "light" || v === "dark" ? v : "system";
}

/** Label and value pairs for the status list. */
export function statusFacts(s: AppStatus, h: HistorySettings | null): [string, string][] {
  const outcome = (o: { Ok: unknown } | { Err: string }, ok: string) => ("Ok" in o ? ok : `not available: ${o.Err}`);
  const integrity =
    s.history_integrity === null
      ? "being checked"
      : "Ok" in s.history_integrity
        ? "every page authenticates"
        : s.history_integrity.Err;
  return [
    ["Version", `MedText ${s.version}`],
    ["Model", "Ok" in s.model ? `${s.model.Ok.pack} ${s.model.Ok.version}, head ${s.model.Ok.head}` : s.model.Err],
    ["History database", h ? `${h.path} (${h.records.toLocaleString("en")} records, encrypted)` : outcome(s.history, "open")],
    ["Keychain", "Ok" in s.history ? "holds the history's key" : s.history.Err],
    ["Integrity check", integrity],
    ["Engine threads", s.threads === null ? "unknown" : String(s.threads)],
    ["Log", "Ok" in s.log_file ? `${s.log_file.Ok} (no patient text)` : s.log_file.Err],
  ];
}

/** The About box's build facts: what IT matches against a release. */
export function buildFacts(a: About): [string, string][] {
  return [
    ["Version", `MedText ${a.version}`],
    ["Commit", a.commit],
    ["Built", a.build_date],
  ];
}

/** Fills the About box's list of packs: each with its version and every
 * head's model hash, or why it does not open. Text only: a manifest is
 * anyone's text. */
export function renderAboutPacks(a: About, list: HTMLElement): void {
  const item = (text: string) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  };
  list.replaceChildren(
    ...(a.packs.length === 0 ? [item("No model packs are installed.")] : []),
    ...a.packs.map((p) => {
      if ("Err" in p) return item(`Does not open: ${p.Err}`);
      const li = item(`${p.Ok.name} ${p.Ok.version}`);
      const heads = document.createElement("ul");
      heads.replaceChildren(
        ...p.Ok.heads.map((h) => {
          const head = item(`head ${h.name}, model `);
          const hash = document.createElement("code");
          hash.textContent = h.model_sha256;
          head.append(hash);
          return head;
        }),
      );
      li.append(heads);
      return li;
    }),
  );
}

/** Opens the About box, then fills it (checking the packs takes a moment). */
async function showAbout(): Promise<void> {
  const dialog = $<HTMLDialogElement>("about-dialog");
  const status = $("about-status");
  status.textContent = "Checking the model packs…";
  $("about-build").replaceChildren();
  $("about-packs").replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const about = await invoke<About>("about");
    renderFacts(buildFacts(about), $("about-build"));
    renderAboutPacks(about, $("about-packs"));
    status.textContent = "";
  } catch (e) {
    status.textContent = typeof e === "string" ? e : "MedText could not read its build facts.";
  }
}

function renderFacts(facts: [string, string][], list: HTMLElement = $("about-facts")): void {
  list.replaceChildren(
    ...facts.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }),
  );
}

export async function loadSettings(): Promise<void> {
  const status = await invoke<AppStatus>("app_status");
  let history: HistorySettings | null = null;
  try {
    history = await invoke<HistorySettings>("history_settings");
    const select = $<HTMLSelectElement>("retention-select");
    const days = history.retention_days === null ? "" : String(history.retention_days);
    if (![...select.options].some((o) => o.value === days)) select.add(new Option(`${days} days`, days));
    select.value = days;
    select.disabled = history.retention_managed;
    select.title = history.retention_managed ? "Set by your IT department" : "";
    $("history-facts").textContent = history.retention_managed ? "Set by your IT department." : "";
  } catch (e) {
    $("history-facts").textContent = typeof e === "string" ? e : "The history is not available.";
  }
  renderFacts(statusFacts(status, history));
  const threads = $<HTMLSelectElement>("threads-select");
  threads.replaceChildren(
    new Option(`one per processor (${status.cpus})`, ""),
    ...Array.from({ length: status.cpus }, (_, i) => new Option(String(i + 1), String(i + 1))),
  );
  threads.value = status.threads_chosen === null ? "" : String(status.threads_chosen);
  if (threads.value === "" && status.threads_chosen !== null) {
    threads.add(new Option(String(status.threads_chosen), String(status.threads_chosen)));
    threads.value = String(status.threads_chosen);
  }
}

export function initSettingsScreen(): void {
  const theme = savedTheme();
  applyTheme(theme);
  for (const radio of document.querySelectorAll<HTMLInputElement>('input[name="theme"]')) {
    radio.checked = radio.value === theme;
    radio.addEventListener("change", () => {
      const chosen = radio.value as Theme;
      localStorage.setItem(THEME_KEY, chosen);
      applyTheme(chosen);
    });
  }
  $("about-button").addEventListener("click", () => void showAbout());
  $("threads-select").addEventListener("change", () => {
    const value = $<HTMLSelectElement>("threads-select").value;
    void invoke("set_engine_threads", { threads: value === "" ? null : Number(value) })
      .then(() => ($("threads-status").textContent = "Takes effect when MedText next starts."))
      .catch((e: unknown) => ($("threads-status").textContent = typeof e === "string" ? e : "Not changed."));
  });
  $("retention-select").addEventListener("change", () => {
    const value = $<HTMLSelectElement>("retention-select").value;
    const days = value === "" ? null : Number(value);
    void invoke<number>("set_retention_days", { days })
      .then((deleted) => {
        $("retention-status").textContent =
          days === null
            ? "Records are kept until you delete them."
            : `Records older than ${days} days are deleted${deleted ? ` (${deleted} deleted now)` : ""}.`;
      })
      .catch((e: unknown) => {
        $("retention-status").textContent = typeof e === "string" ? e : "The setting was not changed.";
      })
      .finally(() => void loadSettings());
  });
}
