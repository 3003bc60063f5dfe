// Build step before tsc: TypeScript types for the protos the sidecar speaks, made by
// proto-loader-gen-types (it ships with @grpc/proto-loader) into generated/. That folder is
// gitignored and outside src/: it is not ours to lint, cover or ship. tsc type-checks it with the
// rest; src/ imports it with `import type` only, so nothing in it is loaded at run time.
// Each set's flags are its loader's options (LOADER_OPTIONS in src/api/protocol.ts and
// src/extproc/protocol.ts), so the `__Output` types are the shapes those loaders decode;
// test/unit/proto-types.test.ts keeps the two equal.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const GENERATED_DIR = path.join(root, 'generated');

/** Envoy's protos, as src/extproc/protocol.ts's envoyProtoIncludeDirs() finds them. */
function envoyIncludeDirs() {
  const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((dir) => path.join(deps, dir));
}

/** One output folder per loader: the same well-known types come out differently with other options. */
export const PROTO_TYPE_SETS = [
  {
    out: 'token-vault',
    file: 'token_tap/v1/token_vault.proto',
    includeDirs: [path.join(root, 'proto')],
    options: { keepCase: true, longs: 'String', enums: 'String', defaults: true, oneofs: true },
  },
  {
    out: 'ext-proc',
    file: 'envoy/service/ext_proc/v3/external_processor.proto',
    includeDirs: envoyIncludeDirs(),
    options: { keepCase: true, longs: 'String', enums: 'String', bytes: 'Buffer', defaults: false, oneofs: true },
  },
];

function flags(options) {
  return Object.entries(options).flatMap(([name, value]) => (value === true ? [`--${name}`] : value === false ? [] : [`--${name}=${value}`]));
}

export function generateProtoTypes() {
  const bin = require.resolve('@grpc/proto-loader/build/bin/proto-loader-gen-types.js');
  rmSync(GENERATED_DIR, { recursive: true, force: true });
  for (const set of PROTO_TYPE_SETS) {
    const outDir = path.join(GENERATED_DIR, set.out);
    mkdirSync(outDir, { recursive: true });
    const includes = set.includeDirs.flatMap((dir) => ['-I', path.relative(root, dir)]);
    // `.js` in the generated imports, as NodeNext resolution wants them.
    const args = [...flags(set.options), '--grpcLib=@grpc/grpc-js', '--importFileExtension=.js', ...includes, '-O', path.relative(root, outDir), set.file];
    execFileSync(process.execPath, [bin, ...args], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) generateProtoTypes();
