// Loads pg before anything imports it, so that on Node 20 it does not load Node's fetch (undici).
// pg checks at load whether it runs on Cloudflare Workers (pg/lib/stream.js): without a global
// `navigator` (Node < 21 has none) it builds a `new Response(...)`, which loads undici, ~5 MB of RSS
// kept for the life of the process that `token-tap serve` at rest never uses (it fetches only for
// an IdP file's keys and refreshes). With a `navigator` that is not Cloudflare's, pg asks no more;
// the stand-in exists only while pg loads (the process's globals are as before afterwards). Node
// 21+ has a navigator of its own and this changes nothing there. Imported first by cli/main.ts.
import { createRequire } from 'node:module';

const hadNavigator = 'navigator' in globalThis;
if (!hadNavigator)
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` }, configurable: true });
try {
  createRequire(import.meta.url)('pg');
} finally {
  if (!hadNavigator) delete (globalThis as { navigator?: unknown }).navigator;
}
