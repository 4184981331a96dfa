import { defineConfig } from "vitest/config";

// Everything is bundled locally: no CDN, no remote fonts, no source maps that
// could leak paths. Tauri serves the built files from ui/dist.
export default defineConfig({
  clearScreen: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2021",
    sourcemap: false,
  },
  test: {
    environment: "jsdom",
    // The page tests (page-tests/) run in Chromium with node:test, on the built UI.
    include: ["src/**/*.test.ts"],
  },
});
