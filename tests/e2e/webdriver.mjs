// A minimal W3C WebDriver client over fetch: enough to drive the real MedText
// app through tauri-driver and WebKitWebDriver, with no third-party packages.

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

export class WebDriver {
  constructor(base) {
    this.base = base;
    this.session = null;
  }

  async request(method, path, body) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) {
      const v = json.value ?? {};
      throw new Error(`WebDriver ${method} ${path}: ${res.status} ${v.error ?? ""} ${v.message ?? ""}`);
    }
    return json.value;
  }

  async start(application) {
    // A test that failed half-way may have left its session open.
    await this.quit().catch(() => {});
    const value = await this.request("POST", "/session", {
      capabilities: { alwaysMatch: { "tauri:options": { application } } },
    });
    this.session = value.sessionId;
  }

  async quit() {
    if (this.session) await this.request("DELETE", `/session/${this.session}`);
    this.session = null;
  }

  s(path) {
    return `/session/${this.session}${path}`;
  }

  async find(css) {
    const v = await this.request("POST", this.s("/element"), { using: "css selector", value: css });
    return v[ELEMENT];
  }

  async findAll(css) {
    const v = await this.request("POST", this.s("/elements"), { using: "css selector", value: css });
    return v.map((e) => e[ELEMENT]);
  }

  async type(css, text) {
    await this.onElement(css, "POST", "value", { text });
  }

  async clear(css) {
    await this.onElement(css, "POST", "clear", {});
  }

  async click(css) {
    await this.onElement(css, "POST", "click", {});
  }

  async text(css) {
    return this.onElement(css, "GET", "text");
  }

  async texts(css) {
    return this.fresh(async () => {
      const ids = await this.findAll(css);
      return Promise.all(ids.map((id) => this.request("GET", this.s(`/element/${id}/text`))));
    });
  }

  async displayed(css) {
    return this.onElement(css, "GET", "displayed");
  }

  /** Finds the element `css` names and sends it one WebDriver element command. */
  async onElement(css, method, command, body) {
    return this.fresh(async () => {
      const id = await this.find(css);
      return this.request(method, this.s(`/element/${id}/${command}`), body);
    });
  }

  /**
   * Runs a find-then-read `step` again when the page replaced the element
   * between the two requests (a panel re-rendered from a second status
   * reply), so a read reflects the page as it is, not a race with it.
   */
  async fresh(step, tries = 5) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (e) {
        if (attempt >= tries || !/stale element reference/.test(String(e?.message))) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Runs `script` (a function body) in the page and returns its value. */
  async execute(script, args = []) {
    return this.request("POST", this.s("/execute/sync"), { script, args });
  }

  /**
   * Calls the app's Rust command `command` from inside the page, as the UI
   * would, and returns `{ ok }` or `{ err }`.
   */
  async invoke(command, args = {}) {
    return this.request("POST", this.s("/execute/async"), {
      script: `const done = arguments[arguments.length - 1];
        window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1])
          .then((ok) => done({ ok: ok ?? null }), (err) => done({ err: String(err) }));`,
      args: [command, args],
    });
  }

  /** A PNG of the window, as bytes. */
  async screenshot() {
    return Buffer.from(await this.request("GET", this.s("/screenshot")), "base64");
  }

  /** Polls `check` until it returns a truthy value or `ms` pass. */
  async waitFor(what, check, ms = 30_000) {
    const until = Date.now() + ms;
    let last;
    while (Date.now() < until) {
      try {
        const v = await check();
        if (v) return v;
      } catch (e) {
        last = e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
  }
}
