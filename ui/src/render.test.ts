import { beforeEach, describe, expect, it } from "vitest";
import {
  inputProblem,
  percent,
  renderEvidence,
  renderHistory,
  renderPackChoices,
  renderResult,
  renderTrainResult,
  showError,
  trainingProgress,
} from "./render";
import type { Classification, HeadChoice, HistoryEntry, PackChoice, PackList } from "./types";

function head(name: string, labels: number): HeadChoice {
  return { name, labels, label_names: [], evaluation: null };
}

function pack(name: string, task: string, heads: HeadChoice[]): PackChoice {
  return { pack: name, version: name === "icd10" ? "1" : "0.1.0", task, license: "test", attribution: "test", heads, card: null };
}

const page = `
  <p id="error" hidden></p>
  <section id="result" hidden>
    <span id="result-label"></span><span id="result-confidence"></span>
    <p id="result-review" hidden></p><ol id="result-probabilities"></ol><p id="result-meta"></p>
  </section>
  <div id="result-evidence-block" hidden><p id="result-evidence"></p></div>
  <select id="pack-select"></select>
  <ol id="history-list"></ol><p id="history-empty"></p>`;

const classification: Classification = {
  pack: "medical-abstracts",
  pack_version: "0.1.0",
  head: "category",
  top: { id: "cardiovascular diseases", display: "Cardiovascular diseases", probability: 0.42 },
  probabilities: [
    { id: "cardiovascular diseases", display: "Cardiovascular diseases", probability: 0.42 },
    { id: "neoplasms", display: "Neoplasms", probability: 0.33 },
    { id: "nervous system diseases", display: "Nervous system diseases", probability: 0.25 },
  ],
  needs_review: true,
  windows: 3,
  tokens: 600,
};

describe("render", () => {
  beforeEach(() => {
    document.body.innerHTML = page;
  });

  it("formats percentages", () => {
    expect(percent(0.42)).toBe("42%");
    expect(percent(0.054)).toBe("5.4%");
    expect(percent(0)).toBe("0%");
  });

  it("refuses empty and over-long input before calling Rust", () => {
    expect(inputProblem("  \n", 10)).toMatch(/Type or paste/);
    expect(inputProblem("a".repeat(11), 10)).toMatch(/11 characters long, over the limit of 10/);
    expect(inputProblem("chest pain", 10)).toBeNull();
  });

  it("shows the top label, every probability and the review flag", () => {
    renderResult(classification);
    expect(document.getElementById("result")!.hidden).toBe(false);
    expect(document.getElementById("result-label")!.textContent).toBe("Cardiovascular diseases");
    expect(document.getElementById("result-confidence")!.textContent).toBe("42%");
    expect(document.getElementById("result-review")!.hidden).toBe(false);
    const rows = document.querySelectorAll<HTMLLIElement>("#result-probabilities li");
    expect([...rows].map((r) => r.dataset.labelId)).toEqual([
      "cardiovascular diseases",
      "neoplasms",
      "nervous system diseases",
    ]);
    expect(document.getElementById("result-meta")!.textContent).toContain("3 overlapping windows");
  });

  it("renders label names from a pack as text, never as HTML", () => {
    const hostile = "<img src=x onerror=alert(1)>";
    renderResult({
      ...classification,
      top: { id: hostile, display: hostile, probability: 0.9 },
      probabilities: [{ id: hostile, display: hostile, probability: 0.9 }],
    });
    expect(document.querySelectorAll("#result img").length).toBe(0);
    expect(document.getElementById("result-label")!.textContent).toBe(hostile);
    expect(document.getElementById("result-probabilities")!.textContent).toContain(hostile);
  });

  it("renders history entries as text, never as HTML", () => {
    const entry: HistoryEntry = {
      id: 7,
      created_at_ms: 1_700_000_000_000,
      preview: "<img src=x onerror=alert(1)> chest pain",
      pack: "medical-abstracts",
      pack_version: "0.1.0",
      head: "category",
      top: classification.top,
      needs_review: false,
      probabilities: classification.probabilities,
    };
    renderHistory([entry]);
    const li = document.querySelector<HTMLLIElement>("#history-list li")!;
    expect(li.dataset.recordId).toBe("7");
    expect(li.querySelector("img")).toBeNull();
    expect(li.textContent).toContain("<img src=x");
    expect(document.getElementById("history-empty")!.hidden).toBe(true);
    renderHistory([]);
    expect(document.getElementById("history-empty")!.hidden).toBe(false);
  });

  it("shows and clears errors", () => {
    showError("the text is empty");
    expect(document.getElementById("error")!.hidden).toBe(false);
    showError(null);
    expect(document.getElementById("error")!.hidden).toBe(true);
  });

  it("marks evidence words by code point, as text, never as HTML", () => {
    // "🫀" is one code point but two UTF-16 units: offsets must count code points.
    const text = "🫀 <b>chest</b> pain & dyspnoea";
    const chars = [...text];
    const at = (word: string) => {
      const start = chars.join("").indexOf(word);
      return [...chars.join("").slice(0, start)].length;
    };
    renderEvidence(text, [
      { start: at("chest"), end: at("chest") + 5, score: 1 },
      { start: at("pain"), end: at("pain") + 4, score: 0.3 },
      { start: at("dyspnoea"), end: at("dyspnoea") + 8, score: 0.1 },
      { start: 0, end: 1, score: -1 },
    ]);
    const box = document.getElementById("result-evidence") as HTMLElement;
    const marks = [...box.querySelectorAll("mark")].map((m) => [m.textContent, m.dataset.strength]);
    expect(marks).toEqual([
      ["chest", "3"],
      ["pain", "1"],
    ]);
    expect(box.textContent).toBe(text);
    expect(box.querySelector("b")).toBeNull();
    expect(document.getElementById("result-evidence-block")?.hidden).toBe(false);

    renderEvidence(text, [{ start: 0, end: 1, score: 0.1 }]);
    expect(document.getElementById("result-evidence-block")?.hidden).toBe(true);
  });

  it("offers every pack and head with the one in use selected", () => {
    const list: PackList = {
      packs: [
        pack("icd10", "ICD", [head("chapter", 22), head("block", 280)]),
        pack("medical-abstracts", "Abstracts", [head("category", 5)]),
      ],
      broken: [],
    };
    renderPackChoices(list, { pack: "icd10", version: "1", head: "block", task: "ICD" });
    const select = document.getElementById("pack-select") as HTMLSelectElement;
    expect([...select.options].map((o) => o.textContent)).toEqual([
      "icd10 · chapter",
      "icd10 · block",
      "medical-abstracts",
    ]);
    expect(JSON.parse(select.value)).toEqual(["icd10", "block"]);
    expect(select.disabled).toBe(false);
  });
});

describe("training", () => {
  it("shows progress with counts and a time estimate, reading first then training", () => {
    const start = trainingProgress({ step: "embedding", done: 0, total: 5000, from_cache: 0, eta_s: null });
    expect(start.fraction).toBe(0);
    expect(start.text).toBe("Reading texts: 0 of 5,000");
    const half = trainingProgress({ step: "embedding", done: 2500, total: 5000, from_cache: 120, eta_s: 95 });
    expect(half.fraction).toBeCloseTo(0.4);
    expect(half.text).toBe("Reading texts: 2,500 of 5,000 (120 already read before) · about 2 min left");
    const epoch = trainingProgress({ step: "training", epoch: 30, max_epochs: 300, validation_loss: 0.4, eta_s: 12.2 });
    expect(epoch.fraction).toBeCloseTo(0.82);
    expect(epoch.text).toBe("Training: epoch 30 of at most 300 · at most 13 s left");
  });

  it("renders the new model's figures per label, as text", () => {
    document.body.innerHTML = `<div id="train-result" hidden><p id="train-summary"></p><table id="train-figures"></table></div>`;
    renderTrainResult({
      removed_duplicates: 3,
      removed_conflicting: 0,
      best_epoch: 40,
      epochs: 55,
      temperature: 1.1,
      test_ece_before_calibration: 0.09,
      test: {
        n: 200,
        accuracy: 0.81,
        macro_f1: 0.795,
        ece: 0.04,
        per_class: [
          { label: "<img src=x onerror=alert(1)>", precision: 0.9, recall: 0.8, f1: 0.847, support: 120 },
          { label: "sepsis", precision: 0.7, recall: 0.85, f1: 0.768, support: 80 },
        ],
      },
    });
    expect(document.getElementById("train-result")!.hidden).toBe(false);
    expect(document.getElementById("train-summary")!.textContent).toBe(
      "On 200 held-out examples: accuracy 81%, macro-F1 0.795, calibration error 0.040. 3 repeated rows were left out.",
    );
    const rows = [...document.querySelectorAll("#train-figures tbody tr")].map((r) =>
      [...r.children].map((c) => c.textContent),
    );
    expect(rows).toEqual([
      ["<img src=x onerror=alert(1)>", "0.90", "0.80", "0.85", "120"],
      ["sepsis", "0.70", "0.85", "0.77", "80"],
    ]);
    expect(document.querySelector("#train-figures img")).toBeNull();
  });
});
