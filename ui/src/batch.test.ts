import { describe, expect, it } from "vitest";
import { appendRows, progressLine, readTextFiles } from "./batch";

describe("batch", () => {
  it("reads the folder's .txt files in name order and names the ones that are not UTF-8", async () => {
    const file = (name: string, bytes: Uint8Array | string) => new File([bytes], name);
    const items = await readTextFiles([
      file("b.txt", "second note"),
      file("a.txt", "first note"),
      file("scan.pdf", "%PDF"),
      file("c.TXT", new Uint8Array([0x66, 0xff, 0xfe])),
    ]);
    expect(items.map((i) => i.name)).toEqual(["a.txt", "b.txt", "c.TXT"]);
    expect(items[0].text).toBe("first note");
    expect(items[2].text).toBeNull();
    expect(items[2].problem).toMatch(/UTF-8/);
  });

  it("shows progress with an ETA from the pace so far", () => {
    expect(progressLine(0, 400, 0, 0)).toBe("0 of 400");
    expect(progressLine(100, 400, 0, 10_000)).toBe("100 of 400 · about 30 s left");
    expect(progressLine(100, 1000, 0, 60_000)).toBe("100 of 1,000 · about 9 min left");
    expect(progressLine(400, 400, 0, 10_000)).toBe("400 of 400");
  });

  it("adds result rows as text, problems marked", () => {
    document.body.innerHTML = `<table><tbody id="batch-rows"></tbody></table>`;
    appendRows([
      { name: "<b>x</b>.txt", label_id: "neoplasms", label: "Neoplasms", probability: 0.9, needs_review: false, saved_id: 3, error: null },
      { name: "row 2", label_id: null, label: null, probability: null, needs_review: false, saved_id: null, error: "the text is empty" },
    ]);
    const rows = document.querySelectorAll("#batch-rows tr");
    expect(rows[0].textContent).toBe("<b>x</b>.txtNeoplasms90%");
    expect(document.querySelectorAll("#batch-rows b").length).toBe(0);
    expect(rows[1].className).toBe("failed");
    expect(rows[1].textContent).toContain("the text is empty");
  });
});
