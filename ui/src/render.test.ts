import { beforeEach, describe, expect, it } from "vitest";
import { inputProblem, percent, renderHistory, renderResult, showError } from "./render";
import type { Classification, HistoryEntry } from "./types";

const page = `
  <p id="error" hidden></p>
  <section id="result" hidden>
    <span id="result-label"></span><span id="result-confidence"></span>
    <p id="result-review" hidden></p><ol id="result-probabilities"></ol><p id="result-meta"></p>
  </section>
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
});
