import { beforeEach, describe, expect, it } from "vitest";
import { countLine, hasOlder, PAGE_SIZE, queryFrom, renderDetail, renderRows } from "./history";
import { renderModelCards, signatureHeader } from "./models-screen";
import { screenOf, showScreen } from "./nav";
import { applyTheme, buildFacts, renderAboutPacks, savedTheme, statusFacts } from "./settings-screen";
import type { About, AppStatus, HistoryEntry, HistoryRecord, PackList } from "./types";

const entry = (id: number, preview: string): HistoryEntry => ({
  id,
  created_at_ms: 1_700_000_000_000 + id,
  preview,
  pack: "medical-abstracts",
  pack_version: "0.1.0",
  head: "category",
  top: { id: "neoplasms", display: "Neoplasms", probability: 0.8 },
  needs_review: id % 2 === 0,
  probabilities: [{ id: "neoplasms", display: "Neoplasms", probability: 0.8 }],
  feedback: id === 1 ? "agree" : null,
});

describe("history search", () => {
  it("turns the form into a query: trimmed words, whole days, known feedback only", () => {
    const q = queryFrom(
      { text: "  chest pain ", pack: "icd10cm", label: "neoplasms", feedback: "none", from: "2026-01-02", until: "2026-01-02" },
      50,
    );
    expect(q.text).toBe("chest pain");
    expect(q.pack).toBe("icd10cm");
    expect(q.label).toBe("neoplasms");
    expect(q.feedback).toBe("none");
    expect(q.offset).toBe(50);
    expect(q.limit).toBe(PAGE_SIZE);
    expect(q.to_ms! - q.from_ms!).toBe(24 * 60 * 60 * 1000 - 1);
    expect(new Date(q.from_ms!).getHours()).toBe(0);
    const empty = queryFrom({ text: " ", pack: "", label: "", feedback: "bogus", from: "", until: "" }, 0);
    expect(empty).toEqual({ offset: 0, limit: PAGE_SIZE });
  });

  it("says which records are shown and whether older ones exist", () => {
    const page = { entries: [entry(1, "a"), entry(2, "b")], total: 1000, more_than_total: true };
    expect(countLine(page, 50)).toBe("Records 51–52 of 1,000+");
    expect(hasOlder(page, 50)).toBe(true);
    expect(hasOlder({ entries: [entry(1, "a")], total: 1, more_than_total: false }, 0)).toBe(false);
    expect(countLine({ entries: [], total: 0, more_than_total: false }, 0)).toBe("No records match.");
  });

  it("renders rows as text with selection kept and feedback named", () => {
    document.body.innerHTML = `<table><tbody id="history-rows"></tbody></table><p id="history-none"></p>`;
    const hostile = `<img src=x onerror="window.__x=1">`;
    renderRows({ entries: [entry(1, hostile), entry(2, "plain")], total: 2, more_than_total: false }, new Set([2]));
    const rows = document.querySelectorAll("#history-rows tr");
    expect(rows.length).toBe(2);
    expect(document.querySelectorAll("#history-rows img").length).toBe(0);
    expect(rows[0].textContent).toContain(hostile);
    expect(rows[0].textContent).toContain("Agreed");
    expect((rows[1].querySelector(".pick") as HTMLInputElement).checked).toBe(true);
    expect(rows[1].textContent).toContain("(review)");
    expect(document.getElementById("history-none")!.hidden).toBe(true);
  });

  it("opens a record with its evidence marked and its correction", () => {
    document.body.innerHTML = `<section id="history-detail" hidden><h3 id="detail-title"></h3><p id="detail-meta"></p>
      <ol id="detail-probabilities"></ol><p id="detail-text"></p><p id="detail-feedback"></p></section>`;
    const record: HistoryRecord = {
      ...entry(3, "colon mass"),
      text: "colon mass <b>biopsy</b>",
      evidence: [{ start: 0, end: 5, score: 1 }],
      model_sha256: "ab",
      feedback_detail: { verdict: "corrected", corrected_label: "digestive system diseases", note: "benign" },
    };
    renderDetail(record);
    expect(document.getElementById("history-detail")!.hidden).toBe(false);
    expect(document.querySelector("#detail-text mark")!.textContent).toBe("colon");
    expect(document.getElementById("detail-text")!.textContent).toBe("colon mass <b>biopsy</b>");
    expect(document.querySelectorAll("#detail-text b").length).toBe(0);
    expect(document.getElementById("detail-feedback")!.textContent).toBe("Corrected to digestive system diseases: benign");
  });
});

describe("screens", () => {
  beforeEach(() => {
    document.body.innerHTML = `<nav><a data-nav="classify"></a><a data-nav="history"></a></nav>
      <div data-screen="classify"></div><section data-screen="history" hidden></section>`;
  });

  it("shows the screen the hash names, Classify otherwise", () => {
    expect(screenOf("#history")).toBe("history");
    expect(screenOf("#nonsense")).toBe("classify");
    expect(screenOf("")).toBe("classify");
    showScreen("history");
    expect(document.querySelector<HTMLElement>('[data-screen="classify"]')!.hidden).toBe(true);
    expect(document.querySelector<HTMLElement>('[data-screen="history"]')!.hidden).toBe(false);
    expect(document.querySelector('[data-nav="history"]')!.getAttribute("aria-current")).toBe("page");
    expect(document.querySelector('[data-nav="classify"]')!.hasAttribute("aria-current")).toBe(false);
  });
});

describe("settings", () => {
  it("applies and remembers the theme", () => {
    applyTheme("dark");
    expect(document.documentElement.dataset.theme).toBe("dark");
    applyTheme("system");
    expect(document.documentElement.dataset.theme).toBeUndefined();
    localStorage.setItem("medtext-theme", "light");
    expect(savedTheme()).toBe("light");
    localStorage.setItem("medtext-theme", "<script>");
    expect(savedTheme()).toBe("system");
  });

  it("lists the status facts, saying what is not available", () => {
    const status = {
      model: { Ok: { pack: "medical-abstracts", version: "0.1.0", head: "category", task: "t" } },
      history: { Err: "the key is missing" },
      history_integrity: null,
      max_text_chars: 100000,
      policy: { Ok: { source: null, managed: [] } },
      lock: { locked: false, idle_minutes: null, idle_managed: false, has_passphrase: false, method: "passphrase", os_user: null },
      log_file: { Ok: "/tmp/app.log" },
      version: "0.1.0",
      threads: 2,
      threads_chosen: null,
      cpus: 2,
    } satisfies AppStatus;
    const facts = Object.fromEntries(statusFacts(status, null));
    expect(facts["Version"]).toBe("MedText 0.1.0");
    expect(facts["Keychain"]).toBe("the key is missing");
    expect(facts["History database"]).toContain("not available");
    expect(facts["Integrity check"]).toBe("being checked");
    expect(facts["Engine threads"]).toBe("2");
  });

  it("names the build and every pack's heads with their model hashes, as text", () => {
    const hostile = `<img src=x onerror="window.__x=1">`;
    const about: About = {
      version: "0.1.0",
      commit: "0123456789ab",
      build_date: "2026-12-07",
      packs: [
        { Ok: { name: "icd10cm", version: "0.2.0", heads: [{ name: "chapter", model_sha256: "aa11" }, { name: "block", model_sha256: "bb22" }] } },
        { Ok: { name: hostile, version: "1", heads: [] } },
        { Err: "models/broken: \"head.safetensors\" is missing" },
      ],
    };
    expect(buildFacts(about)).toEqual([
      ["Version", "MedText 0.1.0"],
      ["Commit", "0123456789ab"],
      ["Built", "2026-12-07"],
    ]);
    const list = document.createElement("ul");
    renderAboutPacks(about, list);
    const packs = [...list.children];
    expect(packs.length).toBe(3);
    expect(packs[0].firstChild?.textContent).toBe("icd10cm 0.2.0");
    expect([...packs[0].querySelectorAll("li")].map((li) => li.textContent)).toEqual([
      "head chapter, model aa11",
      "head block, model bb22",
    ]);
    expect(packs[0].querySelector("code")?.textContent).toBe("aa11");
    expect(packs[1].textContent).toContain(hostile);
    expect(list.querySelectorAll("img").length).toBe(0);
    expect(packs[2].textContent).toBe('Does not open: models/broken: "head.safetensors" is missing');
    renderAboutPacks({ ...about, packs: [] }, list);
    expect(list.textContent).toBe("No model packs are installed.");
  });
});

describe("model cards", () => {
  it("shows each head's figures, marks the one in use and switches on click", () => {
    document.body.innerHTML = `<div id="model-cards"></div><p id="models-broken"></p>`;
    const list: PackList = {
      packs: [
        {
          pack: "icd10cm",
          version: "0.2.0",
          task: "ICD-10-CM chapter",
          license: "public domain",
          attribution: "CDC",
          card: "# Card\n<script>bad()</script>",
          heads: [
            { name: "chapter", labels: 22, label_names: [], evaluation: { dataset: "held-out", n: 900, accuracy: 0.763, macro_f1: 0.661, ece: 0.038 } },
            { name: "block", labels: 280, label_names: [], evaluation: null },
          ],
        },
      ],
      broken: ["models/bad: manifest.json is not JSON"],
    };
    const used: string[] = [];
    renderModelCards(list, { pack: "icd10cm", version: "0.2.0", head: "chapter", task: "" }, (p, h) => used.push(`${p}/${h}`));
    const rows = document.querySelectorAll(".figures tbody tr");
    expect(rows[0].textContent).toContain("0.661");
    expect(rows[1].textContent).toContain("not measured");
    const buttons = document.querySelectorAll<HTMLButtonElement>(".figures button");
    expect(buttons[0].disabled).toBe(true);
    buttons[1].click();
    expect(used).toEqual(["icd10cm/block"]);
    expect(document.querySelectorAll("#model-cards script").length).toBe(0);
    expect(document.querySelector(".card-text")!.textContent).toContain("<script>");
    expect(document.getElementById("models-broken")!.hidden).toBe(false);
  });
});

describe("pack import", () => {
  it("sends a signature file's JSON on one line and refuses other text", () => {
    expect(signatureHeader('{\n  "format": "medtext-pack-signature/1",\n  "signer": "ed25519:ab"\n}\n')).toBe(
      '{"format":"medtext-pack-signature/1","signer":"ed25519:ab"}',
    );
    expect(() => signatureHeader("not json")).toThrow();
  });
});
