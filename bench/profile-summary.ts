// Attributes a V8 .cpuprofile (node --cpu-prof, e.g. of the sidecar under a bench: BENCH_SIDECAR_NODE_ARGS)
// to the steps of a request, and prints a Markdown table: step, ms of CPU, % of non-idle, µs per request.
//   npm run build && node dist/bench/profile-summary.js FILE.cpuprofile --requests N [--within REGEX] [--detail 3] [--rows 25]
// Each sample's time goes to the first frame, from the sampled function towards the root, that a STEPS rule
// names: work inside Node (streams, buffers, a native writev) thus counts for whoever called it (pg, http2),
// while crypto, protobuf, JSON and GC keep steps of their own. Samples no rule names count as "node: ...".
// --within REGEX keeps only the samples between the first and the last whose stack has a frame from a file
// matching REGEX (src/exchange/ for the exchange phase of bench/token-exchange.ts, which then runs GetGrant).
// Only the thread profiled (the main thread) is seen: libuv's pool and V8's helper threads are not.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A step's name for a frame, or undefined to pass the frame's time on to its caller. */
type Rule = (frame: CallFrame, file: string) => string | undefined;

const IDLE = '(idle)';
const PACKAGES: Array<[RegExp, string]> = [
  [/^(pg|pg-protocol|pg-pool|pg-types|pg-connection-string|postgres-[a-z]+)$/, 'pg driver (incl. parsing rows)'],
  [/^@grpc\/grpc-js$/, 'grpc-js'],
  [/^(protobufjs|@protobufjs\/.*|google-protobuf|long)$/, 'protobuf encode/decode'],
  [/^jose$/, 'jose (JWT)'],
  [/^(pino|@pinojs\/.*|pino-std-serializers|sonic-boom|thread-stream|fast-redact|quick-format-unescaped|atomic-sleep)$/, 'logging (pino)'],
  [/^(prom-client|tdigest|bintrees)$/, 'metrics (prom-client)'],
  [/^zod$/, 'zod validation'],
];

const STEPS: Rule[] = [
  ({ functionName, url }) =>
    url === '' && /^\((idle|garbage collector|program)\)$/.test(functionName)
      ? functionName.replace('(garbage collector)', 'GC (garbage collector)')
      : undefined,
  // Start-up's module loading, whoever required the module.
  ({ url }) => (/^node:internal\/modules\//.test(url) ? 'node: module loading (start-up)' : undefined),
  // The socket write syscalls, whether pg or http2 writes.
  ({ functionName, url }) => (url === '' && /^write(v|Buffer|Utf8String|Latin1String)$/.test(functionName) ? 'node: socket writes (syscalls)' : undefined),
  ({ url }) => (url === 'node:internal/crypto/hkdf' ? 'crypto: HKDF (key derivation)' : undefined),
  ({ url }) => (url === 'node:internal/crypto/cipher' ? 'crypto: AES-256-GCM' : undefined),
  ({ url }) => (/^node:internal\/crypto\/(hash|keys|random)$/.test(url) ? 'crypto: hash, HMAC, keys' : undefined),
  // Generated protobufjs coders (new Function) have no file.
  ({ functionName, url }) => (url === '' && /\$(encode|decode|fromObject|toObject|verify)$/.test(functionName) ? 'protobuf encode/decode' : undefined),
  ({ functionName, url }) => (url === '' && /^(parse|stringify)$/.test(functionName) ? 'JSON parse/stringify' : undefined),
  (_frame, file) => {
    const name = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1];
    if (!name) return undefined;
    return PACKAGES.find(([pattern]) => pattern.test(name))?.[1] ?? `package ${name}`;
  },
  ({ url }) => (url.startsWith('node:internal/http2/') ? 'node http2' : undefined),
  (_frame, file) => {
    const module = /\/dist\/(src|bench)\/(.+)\.js$/.exec(file);
    if (!module) return undefined;
    if (module[1] === 'bench') return `bench/${module[2]}`;
    const [folder, name] = module[2]!.includes('/') ? module[2]!.split('/', 2) : ['', module[2]!];
    if (folder === 'ingest' && name!.startsWith('spool')) return 'ingest/spool*';
    if (folder === 'keys') return 'keys/key-ring (seal, open, derive)';
    return `${folder ? `${folder}/` : ''}${name}`;
  },
];

/** What a sample no rule names was doing, by the file of its sampled function. */
function nodeStep(url: string): string {
  if (/^node:internal\/modules\/|^node:internal\/(bootstrap|main)\/|cjs-module-lexer/.test(url)) return 'node: module loading (start-up)';
  if (/^node:(internal\/)?(timers|process\/task_queues|process\/promises|events|async_hooks)/.test(url)) return 'node: timers, microtasks, events';
  if (/^node:(net|internal\/(stream|streams|net|stream_base_commons))/.test(url)) return 'node: sockets, streams';
  if (/^node:(internal\/)?fs/.test(url)) return 'node: fs';
  return 'node: other';
}

function summarise(profile: CpuProfile, within: RegExp | undefined) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const stepOf = new Map<number, string>();
  const stackMatches = new Map<number, boolean>();
  for (const node of profile.nodes) {
    let step: string | undefined;
    let matches = false;
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)!.callFrame;
      const file = frame.url.replace(/^file:\/\//, '');
      step ??= STEPS.reduce<string | undefined>((found, rule) => found ?? rule(frame, file), undefined);
      if (within?.test(file)) matches = true;
    }
    stepOf.set(node.id, step ?? nodeStep(node.callFrame.url));
    stackMatches.set(node.id, matches);
  }
  // Sample i stands for the time since sample i - 1 (timeDeltas[i], µs).
  let [first, last] = [0, profile.samples.length - 1];
  if (within) {
    first = profile.samples.findIndex((id) => stackMatches.get(id));
    while (!stackMatches.get(profile.samples[last]!)) last -= 1;
    if (first < 0) throw new Error(`no sample has a frame from a file matching ${within}`);
  }
  const micros = new Map<string, number>();
  const functions = new Map<string, Map<string, number>>();
  let windowMicros = 0;
  for (let index = first; index <= last; index += 1) {
    const id = profile.samples[index]!;
    const delta = profile.timeDeltas[index]!;
    const step = stepOf.get(id)!;
    windowMicros += delta;
    micros.set(step, (micros.get(step) ?? 0) + delta);
    const frame = byId.get(id)!.callFrame;
    const where = `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/(dist|node_modules)\//, '')}`;
    const inStep = functions.get(step) ?? new Map<string, number>();
    inStep.set(where, (inStep.get(where) ?? 0) + delta);
    functions.set(step, inStep);
  }
  return { micros, functions, windowMicros, samples: last - first + 1 };
}

function main(): void {
  const { values: flags, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      requests: { type: 'string' },
      within: { type: 'string' },
      detail: { type: 'string', default: '0' },
      rows: { type: 'string', default: '25' },
    },
  });
  if (positionals.length !== 1 || !flags.requests) {
    throw new Error('usage: profile-summary FILE.cpuprofile --requests N [--within REGEX] [--detail 3] [--rows 25]');
  }
  const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as CpuProfile;
  const requests = Number(flags.requests);
  const { micros, functions, windowMicros, samples } = summarise(profile, flags.within ? new RegExp(flags.within) : undefined);
  const idle = micros.get(IDLE) ?? 0;
  const busy = windowMicros - idle;
  const steps = [...micros].filter(([step]) => step !== IDLE).sort((a, b) => b[1] - a[1]);
  const shown = steps.slice(0, Number(flags.rows));
  const rest = steps.slice(shown.length).reduce((total, [, value]) => total + value, 0);
  const row = (step: string, value: number) =>
    `| ${step} | ${(value / 1000).toFixed(0)} | ${((100 * value) / busy).toFixed(1)} % | ${(value / requests).toFixed(1)} |`;
  const lines = [
    `${samples} samples over ${(windowMicros / 1e6).toFixed(1)} s${flags.within ? ` (within ${flags.within})` : ''}: ` +
      `${(busy / 1000).toFixed(0)} ms of CPU on the profiled thread, ${(idle / 1000).toFixed(0)} ms idle; ${requests} requests, ` +
      `${(busy / requests).toFixed(0)} µs of CPU per request.`,
    '',
    '| step | CPU ms | % of non-idle | µs per request |',
    '| --- | --- | --- | --- |',
    ...shown.map(([step, value]) => row(step, value)),
    ...(rest > 0 ? [row(`${steps.length - shown.length} other steps`, rest)] : []),
    row('**all but idle**', busy),
  ];
  const detail = Number(flags.detail);
  if (detail > 0) {
    for (const [step] of shown) {
      const top = [...functions.get(step)!].sort((a, b) => b[1] - a[1]).slice(0, detail);
      lines.push(`  ${step}: ${top.map(([where, value]) => `${where} ${(value / 1000).toFixed(0)} ms`).join('; ')}`);
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main();
