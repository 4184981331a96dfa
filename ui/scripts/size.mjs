// Prints the built UI's size, gzipped, and fails above the budget: the UI
// must stay small (under 300 KB gzipped in all, fonts and icons included).
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 300 * 1024;
const dist = join(import.meta.dirname, "..", "dist");
const files = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
let total = 0;
for (const file of files(dist)) total += gzipSync(readFileSync(file), { level: 9 }).length;
console.log(`UI size: ${(total / 1024).toFixed(1)} KB gzipped (budget ${BUDGET / 1024} KB)`);
if (total > BUDGET) {
  console.error("the UI is over its size budget");
  process.exit(1);
}
