/** The page's element with this id (the ids are the page's, in index.html). */
export const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
