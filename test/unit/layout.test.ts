// The folder tree is the map (DESIGN §3): no import cycles in src/, capture/ pure, storage and
// ingest handed their metrics instead of importing ops/, nothing in src/ imports test code, and
// each src folder imports only the folders the allow-list below names.
// File imports are read from the compiled tree with madge, which follows the same imports Node does.
// Folder imports are read from the TypeScript sources, type-only imports included: a folder that
// needs another's types depends on it as much as one that calls it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import madge from 'madge';
import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
const compiledSrc = path.resolve(here, '../../src');
const sourceSrc = path.resolve(here, '../../../src');

/**
 * Known knots: folder cycles allowed for now, each closed by an allow-list entry marked KNOT, written
 * as the cycle reads from its alphabetically first folder. None is left since the quarantine's
 * records moved to ingest/ (issue 21). A cycle not listed here fails the build, and so does a listed
 * one that is gone (take it out, with its KNOT entry).
 */
const KNOWN_KNOTS: Record<string, string> = {};

/**
 * Which src folder may import which (besides itself), read from the imports after lib/ was made;
 * each entry says why. `contract.ts` and `sidecar.ts` stand for themselves. Imports that leave src/
 * (the generated proto types, test code) are checked by their own tests, not here.
 */
const MAY_IMPORT: Record<string, Record<string, string>> = {
  'contract.ts': {},
  lib: {},
  capture: {},
  keys: { lib: 'the error base class (TokenTapError)' },
  store: {
    capture: 'the TokenSet a grant is made of; claims of the id_token it keeps',
    keys: 'rows are sealed and named by fingerprints',
    lib: 'event-loop turns, error codes and names',
  },
  ingest: {
    capture: 'what it spools is a Capture; dispatch reads responses into captures',
    keys: 'the spool seals its records',
    lib: 'backoff, abortable waits, event-loop turns, error codes',
    store: 'the pump writes captures; availability reads the schema version',
  },
  idp: {
    capture: 'token responses are read by the capture parser; bounds and claims',
    lib: 'lazy imports of jose and oauth4webapi, loopback URLs, abortable waits',
  },
  operations: {
    capture: 'a refresh answer is read as a token response and spooled as a Capture',
    config: "the IdP file variable named in refresh refusals; the refresh apply window default; the hook's and the exchange's match rules",
    idp: "the OAuth client of the IdPs; the verifier a quarantined capture is retried through; the JWKS cache the exchange's subject tokens are checked with",
    ingest: 'a quarantined capture is opened to be retried, and re-sealed by key rotation (ingest/quarantine.ts)',
    keys: 'key rotation re-seals stored rows with the ring',
    lib: 'backoff, abortable waits, error codes',
    store: 'grants are read, locked, claimed and written through store/',
  },
  policy: {
    config: 'the refresh-token policies and the runner settings it acts on',
    lib: 'metric registration',
    store: 'the policy lock, due grants and the report figures, in SQL',
  },
  config: {
    'contract.ts': 'the IdP name rule',
    capture: 'route metadata is parsed by the capture code',
    idp: 'the IdP file builds IdP clients and verification settings',
    keys: 'the key ring is parsed from the environment',
    store: 'pool timeouts and durability, the retention policy',
    lib: 'loopback URLs, the refusal summary interval default',
  },
  extproc: {
    'contract.ts': 'metadata keys and names Envoy and the sidecar share',
    capture: 'it hands on observed responses',
    lib: 'gRPC server shutdown',
  },
  envoyconfig: {
    'contract.ts': 'metadata keys, ports, paths and names the rendered config must use',
    config: 'address and value parsing',
  },
  api: {
    'contract.ts': 'the IdP name rule',
    capture: 'which token fields are secret; the Capture a refresh spools',
    config: 'its settings and address formatting',
    keys: 'grants are opened for the caller',
    operations: 'get (with its refresh before a read), refresh and revoke',
    lib: 'constant-time compare, gRPC shutdown, metric registration',
    store: 'grants, API keys and access events (the pool and stores handed in by sidecar.ts)',
  },
  hook: {
    'contract.ts': 'the hook path',
    capture: 'claims of the stored id_token',
    config: 'its settings and address formatting',
    idp: 'the JWKS cache for bearer tokens from Okta',
    lib: 'constant-time compare, metric registration, the refusal summary',
    operations: 'matching the user to a grant, one path with the token exchange (find-grant.ts)',
    ops: 'the shared refusal-summary counter',
    store: 'grants and access events (handed in by sidecar.ts)',
  },
  exchange: {
    'contract.ts': 'the token exchange path',
    api: 'API keys are its client credentials: the key repository, the Authenticator and what a key may do',
    config: 'its settings (listen, TLS, the exchange file) and address formatting',
    lib: 'the refusal summary, metric registration',
    operations: 'the token exchange operation and its subject-token verifier',
    ops: 'the shared refusal-summary counter',
    store: 'access events, and what counts as Postgres being unavailable',
  },
  ops: {
    config: 'health and HTTP parse addresses; the Envoy binary setting (TOKEN_TAP_ENVOY)',
    ingest: 'health reads Postgres availability',
    lib: 'polling for Envoy to start',
  },
  cli: {
    'contract.ts': 'names the CLI prints and checks',
    api: 'the CLI manages API keys',
    config: 'the CLI loads the settings',
    demo: 'the CLI runs the demo',
    envoyconfig: 'the CLI renders Envoy config',
    idp: 'the CLI builds IdP clients',
    ingest: 'the CLI reports spool keys; its grant store seals set-aside captures for the quarantine',
    keys: 'the CLI opens grants with the key ring',
    lib: 'the error model (exit codes by outcome, errors described for messages); error message and code of a spool that cannot be counted',
    operations: 'the CLI reads, refreshes, revokes, erases, rotates keys and retries quarantined captures',
    policy: 'the refresh-token report',
    ops: 'logs and metrics',
    'sidecar.ts': 'serve starts the sidecar',
    store: 'the CLI lists grants and held grants, quarantined captures, and purges',
  },
  demo: {
    'contract.ts': 'the demo route names',
    config: 'the demo loads sidecar settings',
    envoyconfig: 'it renders its Envoy config',
    keys: 'it makes a key ring',
    lib: 'polling for its pieces to start',
    ops: 'it starts Envoy and logs',
    'sidecar.ts': 'it starts the sidecar',
    store: 'it shows the stored grant',
  },
  'sidecar.ts': {
    api: 'the composition root starts every listener',
    capture: 'the observed responses it hands from ext_proc to the intake',
    config: 'its settings; the route resolution it hands capture dispatch',
    exchange: 'the token exchange listener',
    extproc: 'the ext_proc listener',
    hook: 'the Okta hook',
    idp: 'the id_token verifier',
    ingest: 'intake, capture dispatch, spool, pump; the quarantine sealer the grant stores are given',
    lib: 'each shutdown step waited for at most the grace left; errors described for logs and messages; lowering the process priority',
    operations: 'the refresher and revoker it hands the TokenVault API',
    ops: 'health, HTTP, metrics',
    policy: 'the refresh-token policy runner and report gauges it starts with the vault',
    store: 'the pools, grant stores, audit logs and the retention purge it hands the listeners',
  },
};

interface SourceImport {
  /** Source file and imported file, relative to src/ (`lib/turns.ts`). */
  file: string;
  target: string;
  from: string;
  to: string;
}

/** `lib/turns.ts` → lib; `sidecar.ts` → sidecar.ts. */
function folderOf(relative: string): string {
  return relative.includes('/') ? relative.split('/')[0]! : relative;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((entry) => {
      const full = path.join(dir, entry);
      if (statSync(full).isDirectory()) return sourceFiles(full);
      return entry.endsWith('.ts') ? [full] : [];
    });
}

/** Every relative import (static, dynamic, type-only, re-export) between two src folders. */
function crossFolderImports(): SourceImport[] {
  return sourceFiles(sourceSrc).flatMap((full) => {
    const file = path.relative(sourceSrc, full);
    const { importedFiles } = ts.preProcessFile(readFileSync(full, 'utf8'), true, true);
    return importedFiles
      .filter(({ fileName }) => fileName.startsWith('.'))
      .map(({ fileName }) => path.relative(sourceSrc, path.resolve(path.dirname(full), fileName)).replace(/\.js$/, '.ts'))
      .filter((target) => !target.startsWith('..'))
      .map((target) => ({ file, target, from: folderOf(file), to: folderOf(target) }))
      .filter(({ from, to }) => from !== to);
  });
}

/** Each elementary cycle of the folder graph once, from its alphabetically first folder. */
function folderCycles(edges: Map<string, Set<string>>): string[][] {
  const cycles: string[][] = [];
  const walk = (start: string, trail: string[]) => {
    for (const next of [...(edges.get(trail.at(-1)!) ?? [])].sort()) {
      if (next === start) cycles.push([...trail, start]);
      else if (next > start && !trail.includes(next)) walk(start, [...trail, next]);
    }
  };
  for (const start of [...edges.keys()].sort()) walk(start, [start]);
  return cycles;
}

describe('source layout', function () {
  this.timeout(30_000);
  let graph: Record<string, string[]>;
  let circular: string[][];
  let imports: SourceImport[];

  before(async () => {
    const result = await madge(compiledSrc, { fileExtensions: ['js'], includeNpm: true });
    graph = result.obj();
    circular = result.circular();
    imports = crossFolderImports();
  });

  const importsOf = (folder: string) =>
    Object.entries(graph)
      .filter(([file]) => file.startsWith(`${folder}/`))
      .flatMap(([file, deps]) => deps.map((dep) => ({ file, dep })));

  it('has no import cycle anywhere in src/', () => {
    expect(Object.keys(graph).length).to.be.above(40);
    expect(circular).to.deep.equal([]);
  });

  it('keeps capture/ pure: it imports only capture/, decompression, UUIDs and JWT decoding', () => {
    const allowed = (dep: string) => dep.startsWith('capture/') || /node_modules\/jose\//.test(dep) || ['zlib', 'crypto'].includes(dep);
    const offending = importsOf('capture').filter(({ dep }) => !allowed(dep));
    expect(offending).to.deep.equal([]);
    expect(importsOf('capture').length).to.be.above(3);
  });

  it('hands storage, ingest, keys and idp their metrics rather than letting them import ops/', () => {
    const offending = ['store', 'ingest', 'keys', 'idp', 'capture'].flatMap(importsOf).filter(({ dep }) => dep.startsWith('ops/') || dep.startsWith('api/'));
    expect(offending).to.deep.equal([]);
  });

  it('never imports test code from src/', () => {
    const offending = Object.entries(graph).flatMap(([file, deps]) => deps.filter((dep) => dep.includes('test/')).map((dep) => ({ file, dep })));
    expect(offending).to.deep.equal([]);
  });

  it('names every src folder in the folder allow-list', () => {
    const folders = [...new Set(sourceFiles(sourceSrc).map((full) => folderOf(path.relative(sourceSrc, full))))].sort();
    expect(folders.filter((folder) => !(folder in MAY_IMPORT))).to.deep.equal([]);
    expect(folders).to.include('lib');
  });

  it('imports between src folders only as the folder allow-list says', () => {
    expect(imports.length).to.be.above(100);
    const offending = imports
      .filter(({ from, to }) => MAY_IMPORT[from]?.[to] === undefined)
      .map(({ file, target, from, to }) => `src/${file} imports src/${target}: ${from} may not import ${to} (test/unit/layout.test.ts MAY_IMPORT)`);
    expect(offending).to.deep.equal([]);
  });

  it('keeps lib/ generic: it imports no other src folder', () => {
    const fromLib = sourceFiles(path.join(sourceSrc, 'lib')).map((full) => path.relative(sourceSrc, full));
    expect(fromLib.length).to.be.above(5);
    const offending = imports.filter(({ from }) => from === 'lib').map(({ file, target }) => `src/${file} imports src/${target}`);
    expect(offending).to.deep.equal([]);
  });

  it('adds no folder cycle beyond the known knots', () => {
    const edges = new Map<string, Set<string>>();
    for (const { from, to } of imports) edges.set(from, (edges.get(from) ?? new Set()).add(to));
    const through = (cycle: string[]) =>
      cycle
        .slice(1)
        .map((to, index) => imports.find((edge) => edge.from === cycle[index] && edge.to === to)!)
        .map(({ file, target }) => `src/${file} → src/${target}`)
        .join('; ');
    const found = folderCycles(edges);
    const unknown = found.filter((cycle) => !(cycle.join(' → ') in KNOWN_KNOTS)).map((cycle) => `${cycle.join(' → ')} (${through(cycle)})`);
    expect(unknown).to.deep.equal([]);
    // A knot untied leaves the list (and its KNOT entries the table), so the list stays the truth.
    const gone = Object.keys(KNOWN_KNOTS).filter((knot) => !found.some((cycle) => cycle.join(' → ') === knot));
    expect(gone).to.deep.equal([]);
  });
});
