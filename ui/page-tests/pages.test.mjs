// Every screen and error state of the UI in headless Chromium, with the IPC
// mocked (see harness.mjs): what it shows, that axe-core finds no WCAG 2.1
// A/AA violation, and a screenshot of each (ui/page-tests/screenshots, or
// MEDTEXT_PAGE_SCREENSHOTS) for people to look at.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { about, classification, lockable, NOTE, status, working } from "./fixtures.mjs";
import { launch, openPage, serve, shot, violations } from "./harness.mjs";

let server;
let browser;
let base;

before(async () => {
  server = await serve();
  base = `http://127.0.0.1:${server.address().port}/`;
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function checked(page, errors, name) {
  assert.deepEqual(await violations(page), [], `accessibility of ${name}`);
  assert.deepEqual(errors, [], `script errors on ${name}`);
  await shot(page, name);
}

test("classify: a result with every probability, evidence, feedback and copy", async () => {
  const { page, errors } = await openPage(browser, base, working());
  await page.getByText("medical-abstracts 0.1.0").waitFor();
  await page.fill("#note-input", NOTE);
  await page.keyboard.press("Control+Enter");
  await page.locator("#result-label").getByText("Cardiovascular diseases").waitFor();
  assert.equal(await page.locator("#result-probabilities li").count(), 5);
  // The evidence follows the result.
  await page.locator("#result-evidence mark").nth(2).waitFor();
  assert.equal(await page.locator("#feedback-form").isVisible(), true);
  await page.click("#feedback-agree");
  await page.getByText("kept as agreed").waitFor();
  await page.click("#copy-result");
  await page.locator("#copy-status").getByText(/^(Copied\.|Copying is not allowed here\.)$/).waitFor();
  await checked(page, errors, "classify-result");
  await openPage(browser, base, working(), { theme: "dark" }).then(async ({ page: dark, errors: e2 }) => {
    await dark.fill("#note-input", NOTE);
    await dark.click("#classify-button");
    await dark.locator("#result-label").getByText("Cardiovascular diseases").waitFor();
    await dark.locator("#result-evidence mark").first().waitFor();
    await checked(dark, e2, "classify-result-dark");
  });
  // A note that cannot be classified never stands beside the label of the one before.
  await page.fill("#note-input", "   ");
  await page.click("#classify-button");
  await page.getByText("Type or paste a note").waitFor();
  assert.equal(await page.locator("#result").isVisible(), false);
  assert.equal(await page.locator("#feedback-form").isVisible(), false);
});

test("classify: the states before and around a result", async () => {
  // Empty history, and a text over the limit refused before any call.
  let calls = 0;
  const { page, errors } = await openPage(
    browser,
    base,
    working({ recent_history: [], app_status: status({ max_text_chars: 50 }), classify: () => (calls++, null) }),
  );
  await page.getByText("Nothing classified yet.").waitFor();
  await checked(page, errors, "classify-empty");
  await page.fill("#note-input", "x".repeat(60));
  await page.click("#classify-button");
  await page.getByText("over the limit of 50").waitFor();
  assert.equal(calls, 0);
  await page.fill("#note-input", "   ");
  await page.click("#classify-button");
  await page.getByText("Type or paste a note").waitFor();
  await checked(page, errors, "classify-too-long-and-empty");
});

test("classify: no model, a broken pack and a failed save are said plainly", async () => {
  const { page, errors } = await openPage(
    browser,
    base,
    working({
      app_status: status({ model: { Err: "no model pack named 'medical-abstracts' in /opt/medtext/models" } }),
      list_packs: { packs: [], broken: ["model pack /opt/medtext/models/old: manifest.json is not valid JSON"] },
    }),
  );
  await page.getByText("Model not loaded").waitFor();
  assert.equal(await page.locator("#classify-button").isDisabled(), true);
  await page.getByText(/Some model packs cannot be used/).waitFor();
  await checked(page, errors, "classify-no-model");

  const saved = await openPage(
    browser,
    base,
    working({ classify: () => ({ classification: (working().classify)().classification, saved_id: null, save_error: "the disk is full" }) }),
  );
  await saved.page.fill("#note-input", NOTE);
  await saved.page.click("#classify-button");
  await saved.page.getByText("Result shown but not saved: the disk is full").waitFor();
  assert.equal(await saved.page.locator("#feedback-form").isVisible(), false);
  await checked(saved.page, saved.errors, "classify-not-saved");
});

test("history: table, a record opened, filters, an empty search, delete asked first", async () => {
  const deleted = [];
  const queries = [];
  const answers = working({ delete_records: ({ ids }) => (deleted.push(...ids), ids.length) });
  const search = answers.search_history;
  answers.search_history = (args) => (queries.push(args.query), search(args));
  const { page, errors } = await openPage(browser, base, answers);
  await page.click('a[data-nav="history"]');
  await page.locator("#history-rows tr").first().waitFor();
  assert.equal(await page.locator("#history-rows tr").count(), 3);
  assert.equal(await page.locator("#history-count").textContent(), "Records 1–3 of 3");
  await page.locator("#history-rows .open-record").last().click();
  await page.locator("#history-detail").waitFor();
  assert.ok((await page.locator("#detail-text mark").count()) > 0);
  await checked(page, errors, "history-record");
  await page.click("#detail-close");
  await page.locator("#history-rows .pick").first().check();
  await page.click("#history-delete");
  await page.getByText("Delete 1 record(s) from the history?").waitFor();
  await checked(page, errors, "history-delete-question");
  await page.click("#history-delete-yes");
  await page.getByText("Deleted 1 record(s).").waitFor();
  assert.equal(deleted.length, 1);
  // Every filter reaches the query.
  await page.selectOption("#history-pack", "icd10cm");
  await page.selectOption("#history-label", "neoplasms");
  await page.selectOption("#history-feedback", "corrected");
  await page.click("#history-search-button");
  for (let i = 0; i < 100 && !queries.some((q) => q.pack === "icd10cm"); i++) await page.waitForTimeout(50);
  const last = queries.at(-1);
  assert.equal(last.pack, "icd10cm");
  assert.equal(last.label, "neoplasms");
  assert.equal(last.feedback, "corrected");
  await page.selectOption("#history-pack", "");
  await page.selectOption("#history-label", "");
  await page.selectOption("#history-feedback", "");
  await page.fill("#history-text", "nothing like this");
  await page.click("#history-search-button");
  await page.getByText("Nothing in the history matches.").waitFor();
  await checked(page, errors, "history-no-match");
});

test("history: a locked or unopened history is said plainly", async () => {
  const { page, errors } = await openPage(
    browser,
    base,
    working({
      app_status: status({ history: { Err: "the history database exists but its key is missing from the OS keychain" } }),
      recent_history: () => {
        throw "the history database exists but its key is missing from the OS keychain";
      },
    }),
  );
  await page.locator("#recover-form").waitFor();
  await page.getByText(/key is missing/).first().waitFor();
  await checked(page, errors, "history-key-missing");
});

test("batch: results with a problem row, then saved", async () => {
  const { page, errors } = await openPage(browser, base, working());
  await page.click('a[data-nav="batch"]');
  await page.setInputFiles("#batch-file", { name: "notes.csv", mimeType: "text/csv", buffer: Buffer.from("text\na\nb\n") });
  await page.click("#batch-start");
  await page.getByText("Done: 5 texts, 1 with a problem.").waitFor();
  assert.equal(await page.locator("#batch-rows tr.failed").count(), 1);
  await page.click("#batch-save-csv");
  await page.getByText(/Saved to .*medtext-export-2.csv/).waitFor();
  await checked(page, errors, "batch-results");
});

test("batch: a folder of .txt files, one of them not UTF-8", async () => {
  const { page, errors } = await openPage(browser, base, working());
  await page.click('a[data-nav="batch"]');
  // A real folder: a directory input takes a path.
  const folder = mkdtempSync(join(tmpdir(), "medtext-page-batch-"));
  writeFileSync(join(folder, "a.txt"), "colon mass");
  writeFileSync(join(folder, "b.txt"), Buffer.from([0x66, 0xff]));
  writeFileSync(join(folder, "scan.pdf"), "%PDF");
  await page.setInputFiles("#batch-folder", folder);
  await page.click("#batch-start");
  // The browser reads the files when the batch starts: keep them till done.
  await page.getByText("Done: 2 texts, 1 with a problem.").waitFor();
  rmSync(folder, { recursive: true });
  const rows = await page.locator("#batch-rows tr").allTextContents();
  assert.ok(/a\.txt/.test(rows[0]) && /b\.txt/.test(rows[1]), JSON.stringify(rows));
  assert.match(rows[1], /not UTF-8/);
  await checked(page, errors, "batch-folder");
});

test("batch: Cancel stops between parts and says how far it got", async () => {
  let calls = 0;
  let firstPartSent;
  const sent = new Promise((resolve) => (firstPartSent = resolve));
  const answers = working({
    read_batch_file: () => Array.from({ length: 200 }, (_, i) => `note ${i}`),
  });
  const classifyPart = answers.classify_batch;
  answers.classify_batch = async (args) => {
    calls++;
    firstPartSent();
    await new Promise((r) => setTimeout(r, 500));
    return classifyPart(args);
  };
  const { page, errors } = await openPage(browser, base, answers);
  await page.click('a[data-nav="batch"]');
  await page.setInputFiles("#batch-file", { name: "notes.csv", mimeType: "text/csv", buffer: Buffer.from("text\na\n") });
  await page.click("#batch-start");
  // Cancel while the first part of 64 is being classified.
  await sent;
  await page.click("#batch-cancel");
  await page.getByText("Cancelled after 64 of 200 texts.").waitFor();
  assert.equal(calls, 1, "no part is sent after Cancel");
  assert.equal(await page.locator("#batch-rows tr").count(), 64);
  await checked(page, errors, "batch-cancelled");
});

test("batch: nothing chosen, and a file that cannot be read", async () => {
  const { page, errors } = await openPage(
    browser,
    base,
    working({
      read_batch_file: () => {
        throw "data file /tmp/notes.csv: no column 'text' in the first row (2 columns); the file's first row must hold the column names (for example text,label), and the names given must match them exactly";
      },
    }),
  );
  await page.click('a[data-nav="batch"]');
  await page.click("#batch-start");
  await page.getByText("Choose a folder of .txt files or a CSV or JSONL file first.").waitFor();
  await page.setInputFiles("#batch-file", { name: "notes.csv", mimeType: "text/csv", buffer: Buffer.from("id,note\n1,a\n") });
  await page.click("#batch-start");
  await page.getByText(/no column 'text'/).waitFor();
  await checked(page, errors, "batch-error");
});

test("models: cards with figures, the pack in use, a broken pack", async () => {
  const answers = working();
  answers.list_packs = { ...answers.list_packs, broken: ["model pack /opt/medtext/models/old: head.safetensors is truncated"] };
  const { page, errors } = await openPage(browser, base, answers);
  await page.click('a[data-nav="models"]');
  await page.locator(".model-card").nth(1).waitFor();
  assert.equal(await page.locator(".model-card").count(), 2);
  await page.getByText("0.661").waitFor();
  await page.getByText(/Packs that cannot be used/).waitFor();
  await checked(page, errors, "models");
  // An unsigned pack where IT requires signatures: refused, and said why.
  await page.setInputFiles("#import-archive", { name: "pack.tar", mimeType: "application/x-tar", buffer: Buffer.alloc(1024) });
  await page.click("#import-button");
  await page.getByText(/Not imported: .*only accepts packs signed/).waitFor();
  await checked(page, errors, "models-import-refused");
});

test("settings: managed settings, status facts, and the dark theme", async () => {
  const { page, errors } = await openPage(
    browser,
    base,
    working({
      app_status: status({
        policy: { Ok: { source: "/etc/medtext/policy.toml", managed: [{ key: "lock.idle_minutes", value: "5" }, { key: "history.allow_export", value: "false" }] } },
        lock: { locked: false, idle_minutes: 5, idle_managed: true, has_passphrase: true, method: "passphrase", os_user: null },
      }),
      history_settings: { retention_days: 90, retention_managed: true, records: 1234, path: "/home/clinician/.local/share/MedText/history.db" },
    }),
  );
  await page.click('a[data-nav="settings"]');
  await page.getByText("Lock after idle (minutes): 5").waitFor();
  assert.equal(await page.locator("#idle-select").isDisabled(), true);
  assert.equal(await page.locator("#retention-select").isDisabled(), true);
  await page.getByText(/1,234 records, encrypted/).waitFor();
  await page.selectOption("#threads-select", "1");
  await page.getByText("Takes effect when MedText next starts.").waitFor();
  await checked(page, errors, "settings-managed");
  await page.check('#theme-choice input[value="dark"]');
  await checked(page, errors, "settings-dark");
});

test("settings: the About box names the build, and each pack with its heads' model hashes", async () => {
  const { page, errors } = await openPage(browser, base, working());
  await page.click('a[data-nav="settings"]');
  await page.click("#about-button");
  const dialog = page.locator("#about-dialog");
  await dialog.getByText("622e5af0c1d2").waitFor();
  const facts = await dialog.locator("#about-build").innerText();
  for (const fact of ["MedText 0.1.0", "622e5af0c1d2", "2026-12-07"]) assert.ok(facts.includes(fact), facts);
  const packs = await dialog.locator("#about-packs").innerText();
  for (const pack of about.packs.filter((p) => "Ok" in p).map((p) => p.Ok)) {
    assert.ok(packs.includes(`${pack.name} ${pack.version}`), packs);
    for (const head of pack.heads) assert.ok(packs.includes(`head ${head.name}, model ${head.model_sha256}`), packs);
  }
  assert.ok(packs.includes("Does not open: models/old-pack"), packs);
  await checked(page, errors, "settings-about");
  await page.click("#about-close");
  await dialog.waitFor({ state: "hidden" });
  // Reading the build facts can fail: said, not left blank.
  const failing = await openPage(browser, base, working({ about: () => { throw "reading the model packs stopped unexpectedly"; } }));
  await failing.page.click('a[data-nav="settings"]');
  await failing.page.click("#about-button");
  await failing.page.locator("#about-status").getByText("reading the model packs stopped unexpectedly").waitFor();
  assert.deepEqual(failing.errors, []);
});

test("the lock screen, and the first-run passphrase IT requires", async () => {
  const locked = await openPage(
    browser,
    base,
    working({ lock_status: { ...status().lock, locked: true }, recent_history: () => { throw "MedText is locked after a period without use: unlock it to go on"; } }),
  );
  await locked.page.locator("#lock-dialog").waitFor();
  await locked.page.getByText("MedText is locked").first().waitFor();
  await checked(locked.page, locked.errors, "locked");

  const setup = await openPage(
    browser,
    base,
    working({ lock_status: { ...status().lock, has_passphrase: false, idle_minutes: 5 } }),
  );
  await setup.page.getByText("Choose an unlock passphrase").waitFor();
  await checked(setup.page, setup.errors, "lock-setup");
});

test("a reply on its way when the app locks never reaches the locked page", async () => {
  // The evidence and the history list of a note are still on their way when
  // the clinician locks: they must be dropped, not drawn behind the lock.
  let holding = false;
  const held = [];
  const hold = (value) => () => (holding ? new Promise((resolve) => held.push(() => resolve(value))) : value);
  const history = working().recent_history;
  const { page, errors } = await openPage(
    browser,
    base,
    lockable({
      explain: hold(classification.evidence),
      recent_history: hold(history),
    }),
  );
  await page.getByText("medical-abstracts 0.1.0").waitFor();
  await page.locator("#history-list li").first().waitFor();
  holding = true;
  await page.fill("#note-input", NOTE);
  await page.click("#classify-button");
  await page.locator("#result-label").getByText("Cardiovascular diseases").waitFor();
  while (held.length < 2) await page.waitForTimeout(20);
  await page.click("#lock-button");
  await page.locator("#lock-dialog").waitFor();
  for (const release of held) release();
  await page.locator("#classify-button").getByText("Classify", { exact: true }).waitFor();
  await page.waitForTimeout(300);
  const html = await page.evaluate(() => document.body.innerHTML);
  for (const words of ["Quillbrook", "substernal", "hippocampal", "adenocarcinoma"]) {
    assert.ok(!html.includes(words), `"${words}" drawn on the locked page`);
  }
  assert.equal(await page.locator("#history-list li").count(), 0);
  assert.deepEqual(errors, []);
});

test("an error on its way when the app locks is not drawn behind the lock either", async () => {
  // The Rust side's messages hold no patient text; this one pretends to, to
  // show that the page would not draw it whatever it said.
  let release = null;
  const { page, errors } = await openPage(
    browser,
    base,
    lockable({
      classify: () =>
        new Promise((_, reject) => {
          release = () => reject("could not classify 'crushing substernal chest pain'");
        }),
    }),
  );
  await page.getByText("medical-abstracts 0.1.0").waitFor();
  await page.fill("#note-input", NOTE);
  await page.click("#classify-button");
  while (release === null) await page.waitForTimeout(20);
  await page.click("#lock-button");
  await page.locator("#lock-dialog").waitFor();
  release();
  await page.locator("#classify-button").getByText("Classify", { exact: true }).waitFor();
  await page.waitForTimeout(300);
  assert.ok(!(await page.evaluate(() => document.body.innerHTML)).includes("substernal"), "the error drawn behind the lock");
  assert.deepEqual(errors, []);
});

test("the lock forgets the history selection: nothing unseen can be exported or deleted after it", async () => {
  const { page, errors } = await openPage(browser, base, lockable());
  await page.click('a[data-nav="history"]');
  await page.locator("#history-rows .pick").first().check();
  await page.click("#history-delete");
  assert.equal(await page.locator("#history-export").isEnabled(), true);
  await page.click("#lock-button");
  await page.locator("#lock-dialog").waitFor();
  assert.equal(await page.locator("#history-rows tr").count(), 0);
  assert.equal(await page.locator("#history-delete-confirm").isVisible(), false);
  await page.fill("#unlock-passphrase", "night shift 42");
  await page.click("#unlock-button");
  await page.locator("#lock-dialog").waitFor({ state: "hidden" });
  assert.equal(await page.locator("#history-export").isEnabled(), false);
  assert.equal(await page.locator("#history-delete").isEnabled(), false);
  // "Select all" has no old page to draw from memory.
  await page.locator("#history-select-all").click();
  assert.equal(await page.locator("#history-rows tr").count(), 0);
  assert.deepEqual(errors, []);
});

test("history: a slow older search never replaces the newer one's rows", async () => {
  const answers = working();
  const search = answers.search_history;
  let release = null;
  answers.search_history = (args) =>
    args.query.text === "memory"
      ? new Promise((resolve) => (release = () => resolve(search(args))))
      : search(args);
  const { page, errors } = await openPage(browser, base, answers);
  await page.click('a[data-nav="history"]');
  await page.locator("#history-rows tr").nth(2).waitFor();
  await page.fill("#history-text", "memory");
  await page.click("#history-search-button");
  while (release === null) await page.waitForTimeout(20);
  await page.fill("#history-text", "colon");
  await page.click("#history-search-button");
  await page.locator("#history-rows tr").getByText(/Colon adenocarcinoma/).waitFor();
  release();
  await page.waitForTimeout(300);
  const rows = await page.locator("#history-rows tr").allTextContents();
  assert.equal(rows.length, 1, JSON.stringify(rows));
  assert.match(rows[0], /Colon adenocarcinoma/);
  assert.deepEqual(errors, []);
});

test("a malformed machine policy stops the app with its message", async () => {
  const { page, errors } = await openPage(
    browser,
    base,
    working({ app_status: status({ policy: { Err: "machine policy /etc/medtext/policy.toml, line 3: unknown field `idle_minuts`" } }) }),
  );
  await page.getByText("MedText cannot start").waitFor();
  await page.getByText(/line 3/).waitFor();
  await checked(page, errors, "policy-refused");
});

test("keyboard alone: reach the text box, classify, give feedback, with focus always visible", async () => {
  const { page, errors } = await openPage(browser, base, working());
  await page.getByText("medical-abstracts 0.1.0").waitFor();
  const order = [];
  for (let i = 0; i < 12 && order.at(-1) !== "note-input"; i++) {
    await page.keyboard.press("Tab");
    order.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim()));
  }
  // The screens first, then the model, then the text box.
  assert.deepEqual(order.slice(0, 5), ["Classify", "History", "Batch", "Models", "Settings"]);
  assert.equal(order.at(-1), "note-input", JSON.stringify(order));
  await page.keyboard.type(NOTE);
  await page.keyboard.press("Control+Enter");
  await page.locator("#result-label").getByText("Cardiovascular diseases").waitFor();
  // The result is announced to screen readers.
  assert.equal(await page.getAttribute("#result", "aria-live"), "polite");
  // On to Agree, by Tab alone.
  for (let i = 0; i < 8 && (await page.evaluate(() => document.activeElement?.id)) !== "feedback-agree"; i++) {
    await page.keyboard.press("Tab");
  }
  assert.equal(await page.evaluate(() => document.activeElement?.id), "feedback-agree");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "the focused control shows its focus");
  await page.keyboard.press("Enter");
  await page.getByText("kept as agreed").waitFor();
  await checked(page, errors, "keyboard-only");
});

test("long labels and a long note stay inside the window", async () => {
  const long = "Diseases of the circulatory system, complicating pregnancy, childbirth and the puerperium, unspecified";
  const answers = working({
    classify: () => ({
      classification: {
        pack: "icd10cm",
        pack_version: "0.2.0",
        head: "block",
        model_sha256: "ab",
        top: { id: "O99.4", display: long, probability: 0.41 },
        probabilities: [
          { id: "O99.4", display: long, probability: 0.41 },
          { id: "I20-I25", display: "Ischemic heart diseases", probability: 0.35 },
          { id: "I30-I5A", display: `Other forms of heart disease ${"with a very long qualifier ".repeat(3)}`, probability: 0.24 },
        ],
        needs_review: true,
        windows: 9,
        tokens: 2100,
        evidence: [],
      },
      saved_id: 9,
      save_error: null,
    }),
    explain: [],
  });
  const { page, errors } = await openPage(browser, base, answers);
  await page.fill("#note-input", `${NOTE} `.repeat(60));
  await page.click("#classify-button");
  await page.locator("#result-label").getByText(long).waitFor();
  await page.getByText("Low confidence: review before relying on it").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the window`);
  await checked(page, errors, "long-labels");
});
