/**
 * The web console's build: static files into dist/console/ (served by `stowage start` at the
 * API's address, and in AWS from S3 behind CloudFront). No inline script or style is emitted, so
 * the pages run under a CSP of `script-src 'self'; style-src 'self'`.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: {
    outDir: fileURLToPath(new URL('../dist/console/', import.meta.url)),
    emptyOutDir: true,
    // Vite inlines small assets as data: URLs; the CSP allows data: for images only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: true,
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
