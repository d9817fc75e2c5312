import { defineConfig, type Plugin } from "vite";
import type { OutputAsset } from "rollup";

// Preact's JSX through esbuild (no Babel plugin); the server serves dist/ at "/".
const esbuild = { jsx: "automatic", jsxImportSource: "preact" } as const;

// `vite build --mode report`: dist/report.html, the template of `candela report`, as ONE file
// with its JavaScript and CSS inlined, so a filled report opens from file:// with no network.
function singleFile(): Plugin {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return {
    name: "candela-single-file",
    enforce: "post",
    generateBundle(_options, bundle) {
      const html = Object.values(bundle).find((f) => f.type === "asset" && f.fileName.endsWith(".html")) as OutputAsset | undefined;
      if (!html) throw new Error("singleFile: no html in the bundle");
      let page = String(html.source);
      for (const [name, f] of Object.entries(bundle)) {
        if (f.type === "chunk") {
          const tag = new RegExp(`<script[^>]*src="[^"]*${escape(f.fileName)}"[^>]*></script>`);
          if (!tag.test(page)) throw new Error(`singleFile: no <script> for ${f.fileName}`);
          // A "</script" inside the code would end the element early.
          page = page.replace(tag, () => `<script type="module">${f.code.replace(/<\/script/gi, "<\\/script")}</script>`);
          delete bundle[name];
        } else if (f.fileName.endsWith(".css")) {
          const tag = new RegExp(`<link[^>]*href="[^"]*${escape(f.fileName)}"[^>]*>`);
          if (!tag.test(page)) throw new Error(`singleFile: no <link> for ${f.fileName}`);
          page = page.replace(tag, () => `<style>${String(f.source).replace(/<\/style/gi, "<\\/style")}</style>`);
          delete bundle[name];
        }
      }
      html.source = page;
    },
  };
}

export default defineConfig(({ mode }) =>
  mode === "report"
    ? {
        esbuild,
        base: "./",
        plugins: [singleFile()],
        build: {
          outDir: "dist", emptyOutDir: false, target: "es2020", chunkSizeWarningLimit: 2000,
          assetsInlineLimit: 100_000_000, cssCodeSplit: false, modulePreload: false,
          rollupOptions: { input: "report.html", output: { inlineDynamicImports: true } },
        },
      }
    : {
        esbuild,
        base: "./",
        build: { outDir: "dist", emptyOutDir: true, target: "es2020", chunkSizeWarningLimit: 900 },
      },
);
