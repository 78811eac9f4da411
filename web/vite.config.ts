import { svelte } from "@sveltejs/vite-plugin-svelte";
import type { Plugin } from "vite";
import { defineConfig } from "vitest/config";

/** KaTeX's CSS names each font in woff2, woff and ttf; every browser that runs this app
 * reads woff2, so the other two are dropped and never bundled. */
function katexWoff2Only(): Plugin {
  return {
    name: "katex-woff2-only",
    enforce: "pre",
    transform(code, id) {
      if (!/katex(\.min)?\.css$/.test(id)) return null;
      return code.replace(/,\s*url\([^)]*\.(woff|ttf)\)\s*format\("(woff|truetype)"\)/g, "");
    },
  };
}

// The build goes into the Python package, so `pip install` users get the app without node.
// publicDir holds what `amlab export` writes (digits, DrDAM projections).
export default defineConfig({
  plugins: [katexWoff2Only(), svelte()],
  base: "./",
  publicDir: "public",
  build: {
    outDir: "../src/amlab/explain/static",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    reportCompressedSize: false,
    // KaTeX (the equations) in its own chunk, shared by the views
    rollupOptions: {
      output: { manualChunks: (id) => (id.includes("node_modules/katex/") ? "katex" : undefined) },
    },
  },
  test: { include: ["src/**/*.test.ts"] },
});
