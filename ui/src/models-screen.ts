// The Models screen: every installed pack with its card and figures, and a
// button to use each head.

import { percent } from "./render";
import type { ModelInfo, PackList } from "./types";

/** Cards for every pack; `use` is called with a pack and head to switch to. */
export function renderModelCards(
  list: PackList,
  current: ModelInfo | null,
  use: (pack: string, head: string) => void,
  doc: Document = document,
): void {
  const el = (tag: string, text?: string, className?: string) => {
    const e = doc.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
  };
  const cards = list.packs.map((p) => {
    const card = el("article", undefined, "model-card");
    card.setAttribute("aria-label", `Model ${p.pack}`);
    card.append(el("h3", `${p.pack} ${p.version}`), el("p", p.task), el("p", `Licence: ${p.license}`, "muted"));
    const table = el("table", undefined, "figures") as HTMLTableElement;
    const head = table.createTHead().insertRow();
    for (const h of ["Head", "Labels", "Accuracy", "Macro-F1", "Calibration error", "Measured on", ""]) {
      const th = el("th", h);
      th.setAttribute("scope", "col");
      head.append(th);
    }
    const body = table.createTBody();
    for (const h of p.heads) {
      const row = body.insertRow();
      const e = h.evaluation;
      const inUse = current?.pack === p.pack && current.head === h.name;
      const button = el("button", inUse ? "In use" : "Use", "secondary") as HTMLButtonElement;
      button.type = "button";
      button.disabled = inUse;
      // The accessible name starts with the visible words.
      button.setAttribute("aria-label", `${button.textContent}: ${p.pack}, head ${h.name}`);
      button.addEventListener("click", () => use(p.pack, h.name));
      const cells = [
        h.name,
        String(h.labels),
        e ? percent(e.accuracy) : "not measured",
        e ? e.macro_f1.toFixed(3) : "",
        e ? e.ece.toFixed(3) : "",
        e ? `${e.dataset} (n = ${e.n.toLocaleString("en")})` : "",
      ];
      for (const c of cells) row.insertCell().textContent = c;
      row.insertCell().append(button);
    }
    card.append(table);
    if (p.card) {
      const details = el("details");
      details.append(el("summary", "Model card: intended use, data, known weaknesses"), el("pre", p.card, "card-text"));
      card.append(details);
    }
    return card;
  });
  (doc.getElementById("model-cards") as HTMLElement).replaceChildren(...cards);
  const broken = doc.getElementById("models-broken") as HTMLElement;
  broken.textContent = list.broken.length ? `Packs that cannot be used: ${list.broken.join("; ")}` : "";
  broken.hidden = list.broken.length === 0;
}

/**
 * The `x-signature` header for a `.sig` file's text: the same JSON on one
 * line (a header cannot hold line breaks), or an error for text that is
 * not a signature file.
 */
export function signatureHeader(text: string): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw "The signature file is not a MedText signature (.sig) file.";
  }
  return JSON.stringify(value);
}
