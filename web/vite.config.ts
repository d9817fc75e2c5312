import { defineConfig } from "vite";

// Preact's JSX through esbuild (no Babel plugin); the server serves dist/ at "/".
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, target: "es2020", chunkSizeWarningLimit: 900 },
});
