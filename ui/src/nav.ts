// The screens (Classify, History, Batch, Models, Settings) as one page: the URL's
// hash names the one shown, so Back and Forward move between them.

export type Screen = "classify" | "history" | "batch" | "models" | "settings";
const SCREENS: Screen[] = ["classify", "history", "batch", "models", "settings"];

/** The screen a hash names; Classify for anything else. */
export function screenOf(hash: string): Screen {
  const name = hash.replace(/^#/, "");
  return (SCREENS as string[]).includes(name) ? (name as Screen) : "classify";
}

/** Shows `screen`, hides the others and marks its tab as current. */
export function showScreen(screen: Screen, doc: Document = document): void {
  for (const el of doc.querySelectorAll<HTMLElement>("[data-screen]")) {
    el.hidden = el.dataset.screen !== screen;
  }
  for (const a of doc.querySelectorAll<HTMLAnchorElement>("[data-nav]")) {
    if (a.dataset.nav === screen) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

/** Follows the hash now and whenever it changes; `entered` runs on each screen shown. */
export function followHash(entered: (screen: Screen) => void): void {
  const go = () => {
    const screen = screenOf(location.hash);
    showScreen(screen);
    entered(screen);
  };
  window.addEventListener("hashchange", go);
  go();
}
