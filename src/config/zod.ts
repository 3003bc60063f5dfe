// zod, loaded on first use: only the checks of a YAML file (TOKEN_TAP_IDP_CONFIG, TOKEN_TAP_HOOK_CONFIG,
// TOKEN_TAP_EXCHANGE_CONFIG) build schemas, and a sidecar configured without one never loads it
// (~4.7 MB of its RSS at rest: zod's modules, and the schemas built at import). Hence every schema in
// config/ is built inside a function, from `const z = zod()`, never at a module's top level.
// Required (zod's CommonJS build) rather than imported: config loading is synchronous. Nothing else
// imports zod, so there is one copy of it in the process.
import { createRequire } from 'node:module';

const requireModule = createRequire(import.meta.url);

export function zod(): typeof import('zod').z {
  return (requireModule('zod') as typeof import('zod')).z;
}
