import { describe, expect, it } from "vitest";
import { clearPatientText, managedLines, throttle } from "./lock";

describe("clearPatientText", () => {
  it("leaves no trace of the note, the result, the history or a recovery key", () => {
    const secret = "Jane Roe, MRN 00412, NSTEMI";
    document.body.innerHTML = `
      <textarea id="note-input"></textarea><span id="char-count">27 characters</span>
      <section id="result"><span id="result-label">Cardiovascular</span><span id="result-confidence">90%</span>
        <ol id="result-probabilities"><li>Cardiovascular 90%</li></ol><p id="result-meta">${secret}</p></section>
      <div id="result-evidence-block"><p id="result-evidence"><mark>${secret}</mark></p></div>
      <ol id="history-list"><li>${secret}</li></ol>
      <div id="train-result"><p id="train-summary">${secret}</p><table id="train-figures"><tr><td>${secret}</td></tr></table></div>
      <dialog id="recovery-dialog"><code id="recovery-key">ABCD-EFGH</code></dialog>
      <input id="recover-key" /><input id="new-passphrase" type="password" />
      <p id="error">${secret}</p>`;
    (document.getElementById("note-input") as HTMLTextAreaElement).value = secret;
    (document.getElementById("recover-key") as HTMLInputElement).value = "WXYZ-1234";
    (document.getElementById("new-passphrase") as HTMLInputElement).value = "night shift 42";
    clearPatientText();
    expect(document.body.innerHTML).not.toContain("Jane Roe");
    expect(document.body.innerHTML).not.toContain("ABCD-EFGH");
    expect((document.getElementById("note-input") as HTMLTextAreaElement).value).toBe("");
    expect((document.getElementById("recover-key") as HTMLInputElement).value).toBe("");
    expect((document.getElementById("new-passphrase") as HTMLInputElement).value).toBe("");
    expect((document.getElementById("result") as HTMLElement).hidden).toBe(true);
    expect(document.getElementById("char-count")?.textContent).toBe("0 characters");
  });
});

describe("managedLines", () => {
  it("names each managed setting in words and keeps unknown keys readable", () => {
    expect(
      managedLines({
        source: "/etc/medtext/policy.toml",
        managed: [
          { key: "lock.idle_minutes", value: "5" },
          { key: "history.allow_export", value: "false" },
          { key: "recovery.escrow_public_key", value: "age1abc" },
          { key: "future.key", value: "x" },
        ],
      }),
    ).toEqual([
      "Lock after idle (minutes): 5",
      "Unencrypted export allowed: no",
      "Recovery key escrowed to IT, key: age1abc",
      "future.key: x",
    ]);
  });
});

describe("throttle", () => {
  it("reports at most once per period", () => {
    let t = 0;
    let calls = 0;
    const report = throttle(() => calls++, 1000, () => t);
    report();
    t = 500;
    report();
    expect(calls).toBe(1);
    t = 1000;
    report();
    expect(calls).toBe(2);
  });
});
