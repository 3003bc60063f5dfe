// The protocol types are generated at build time (scripts/generate-proto-types.js) into generated/,
// outside src/. They describe what a loader decodes only when made with that loader's options, and
// they stay out of the running code only while src/ imports them as types.
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { LOADER_OPTIONS as TOKEN_VAULT_LOADER_OPTIONS, TOKEN_VAULT_PROTO, TOKEN_VAULT_PROTO_DIR } from '../../src/api/protocol.js';
import { EXT_PROC_PROTO, envoyProtoIncludeDirs, LOADER_OPTIONS as EXT_PROC_LOADER_OPTIONS } from '../../src/extproc/protocol.js';

interface ProtoTypeSet {
  out: string;
  file: string;
  includeDirs: string[];
  options: Record<string, unknown>;
}

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const COMPILED_SRC = path.join(ROOT, 'dist/src');

/** The options as the generator's flags name them: constructors by name, an unset flag as false. */
function asFlags(options: Record<string, unknown>): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(options)) {
    if (name === 'includeDirs') continue;
    flags[name] = typeof value === 'function' ? value.name : value;
  }
  for (const name of ['keepCase', 'defaults', 'oneofs', 'arrays', 'objects', 'json']) flags[name] ??= false;
  return flags;
}

function compiledFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return compiledFiles(full);
    return entry.name.endsWith('.js') ? [full] : [];
  });
}

describe('protocol types generated from the protos', () => {
  let sets: Map<string, ProtoTypeSet>;

  before(async () => {
    const script = (await import(new URL('../../../scripts/generate-proto-types.js', import.meta.url).href)) as { PROTO_TYPE_SETS: ProtoTypeSet[] };
    sets = new Map(script.PROTO_TYPE_SETS.map((set) => [set.out, set]));
  });

  it('are made with the options the TokenVault loader decodes with, from its proto', () => {
    const set = sets.get('token-vault')!;
    expect(asFlags(set.options)).to.deep.equal(asFlags(TOKEN_VAULT_LOADER_OPTIONS as Record<string, unknown>));
    expect(set.file).to.equal(TOKEN_VAULT_PROTO);
    expect(set.includeDirs.map((dir) => realpathSync(dir))).to.deep.equal([realpathSync(TOKEN_VAULT_PROTO_DIR)]);
  });

  it("are made with the options the ext_proc codec decodes with, from Envoy's protos", () => {
    const set = sets.get('ext-proc')!;
    expect(asFlags(set.options)).to.deep.equal(asFlags(EXT_PROC_LOADER_OPTIONS as Record<string, unknown>));
    expect(set.file).to.equal(EXT_PROC_PROTO);
    expect(set.includeDirs.map((dir) => realpathSync(dir))).to.deep.equal(envoyProtoIncludeDirs().map((dir) => realpathSync(dir)));
  });

  it('are imported by src/ as types only: the compiled code never loads generated/', () => {
    const files = compiledFiles(COMPILED_SRC);
    expect(files.length).to.be.above(40);
    const specifier = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;
    const offending = files.flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(specifier)]
        .map((match) => match[1]!)
        .filter((target) => /(^|\/)generated\//.test(target))
        .map((target) => `${path.relative(COMPILED_SRC, file)} → ${target}`),
    );
    expect(offending).to.deep.equal([]);
  });
});
