// Every plain environment setting declared once, as data: its name, how it is read, its default and one
// line of doc. The loaders read through these, `--help` quotes their defaults, and a unit test
// (test/unit/settings.test.ts) keeps docs/configuration.md's table rows in step with them.
import { DEFAULT_REFUSAL_SUMMARY_MS } from '../lib/refusal-summary.js';
import { COMMIT_DURABILITIES, type CommitDurability } from '../store/pool-settings.js';
import { nonNegativeInteger, positiveInteger, readBoolean } from './values.js';

interface Declared {
  readonly name: string;
  /** One line: what it is for (docs/configuration.md says more). */
  readonly doc: string;
  /** How docs/configuration.md shows the default, when it is not the default alone in backquotes. */
  readonly defaultDoc?: string;
}

/** An integer above 0 ('positive') or of 0 or more ('non-negative'), optionally within bounds. */
export interface IntegerSetting extends Declared {
  readonly kind: 'positive' | 'non-negative';
  readonly default: number;
  /** Bounds beyond the kind's; out of them, `problem` (which quotes the value) joins the list. */
  readonly within?: { readonly min?: number; readonly max?: number; readonly problem: (value: number) => string };
}

/** true/1 or false/0; unset is false. */
export interface BooleanSetting extends Declared {
  readonly kind: 'boolean';
  readonly default: false;
}

/** Text a loader parses itself (a listen address, "off"...): only its default lives here. */
export interface TextSetting extends Declared {
  readonly kind: 'text';
  readonly default: string;
}

/** One of a fixed set of words (case-insensitive, trimmed); anything else: `problem`, which quotes the raw text. */
export interface ChoiceSetting<T extends string = string> extends Declared {
  readonly kind: 'choice';
  readonly choices: readonly T[];
  readonly default: T;
  readonly problem: (raw: string) => string;
}

export type Setting = IntegerSetting | BooleanSetting | TextSetting | ChoiceSetting;

const integer = (name: string, kind: IntegerSetting['kind'], value: number, doc: string, more: Partial<Pick<IntegerSetting, 'within' | 'defaultDoc'>> = {}): IntegerSetting => ({ name, kind, default: value, doc, ...more });
const flag = (name: string, doc: string): BooleanSetting => ({ name, kind: 'boolean', default: false, doc });
const text = (name: string, value: string, doc: string): TextSetting => ({ name, kind: 'text', default: value, doc });
/** A file's path, unset by default. */
const path = (name: string, doc: string): TextSetting => ({ name, kind: 'text', default: '', doc, defaultDoc: '(none)' });

// The sidecar's own listeners, ext_proc and limits (config/sidecar.ts).
export const LISTEN = text('TOKEN_TAP_LISTEN', '127.0.0.1:50051', 'ext_proc listen address: unix:/path or a loopback HOST:PORT');
export const OPS_LISTEN = text('TOKEN_TAP_OPS_LISTEN', '127.0.0.1:9464', '/metrics, /healthz, /readyz');
export const HOOK_LISTEN = text('TOKEN_TAP_HOOK_LISTEN', 'off', 'Okta token inline hook listener, or off');
export const ALLOW_REMOTE_EXTPROC = flag('TOKEN_TAP_ALLOW_REMOTE_EXTPROC', 'ext_proc may listen beyond loopback (with mTLS)');
export const ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS = flag('TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS', 'a remote ext_proc without client certificates');
export const MAX_BODY_BYTES = integer('TOKEN_TAP_MAX_BODY_BYTES', 'positive', 1024 * 1024, 'largest response body collected and parsed');
export const PG_POOL_SIZE = integer('TOKEN_TAP_PG_POOL_SIZE', 'positive', 4, 'Postgres connections of the capture writer');
export const SPOOL_MAX_BYTES = integer('TOKEN_TAP_SPOOL_MAX_BYTES', 'positive', 128 * 1024 * 1024, 'spool cap; beyond it new captures are dropped and counted', {
  defaultDoc: '`134217728` (128 MiB)',
  within: { min: 64 * 1024, problem: (value) => `TOKEN_TAP_SPOOL_MAX_BYTES must be at least 65536 (64 KiB), got ${value}` },
});
export const SPOOL_FSYNC_MS = integer('TOKEN_TAP_SPOOL_FSYNC_MS', 'non-negative', 5, 'group-commit interval of the spool (0 to 1000)', {
  within: { max: 1000, problem: (value) => `TOKEN_TAP_SPOOL_FSYNC_MS must be at most 1000 (a capture waits that long to be durable), got ${value}` },
});
export const SPOOL_GRACE_SECONDS = integer('TOKEN_TAP_SPOOL_GRACE_SECONDS', 'non-negative', 60, 'how long a spool segment already in Postgres is kept (0 to 86400)', {
  within: { max: 86_400, problem: (value) => `TOKEN_TAP_SPOOL_GRACE_SECONDS must be at most 86400 (a day), got ${value}` },
});
export const SPOOL_DIR = text('TOKEN_TAP_SPOOL_DIR', '.token-tap/spool', 'the encrypted local spool every capture is written to before Postgres');
export const SHUTDOWN_GRACE_MS = integer('TOKEN_TAP_SHUTDOWN_GRACE_MS', 'non-negative', 10_000, 'on SIGTERM: time for open streams and the flush to Postgres');
export const CAPTURE_NICE = integer('TOKEN_TAP_CAPTURE_NICE', 'non-negative', 0, 'niceness the sidecar runs at (0 to 19; 0 leaves it alone)', {
  within: { max: 19, problem: (value) => `TOKEN_TAP_CAPTURE_NICE must be between 0 and 19, got ${value}` },
});
export const CAPTURE_BACKLOG = integer('TOKEN_TAP_CAPTURE_BACKLOG', 'positive', 20_000, 'finished responses waiting for capture work, at most');
export const CAPTURE_GATHER_MS = integer('TOKEN_TAP_CAPTURE_GATHER_MS', 'non-negative', 10, 'how long finished responses gather before their capture work starts', {
  within: { max: 1_000, problem: (value) => `TOKEN_TAP_CAPTURE_GATHER_MS must be at most 1000, got ${value}` },
});
export const EXTPROC_THREAD = flag('TOKEN_TAP_EXTPROC_THREAD', "serve Envoy's streams on a worker thread of their own");
export const JWKS_COOLDOWN_MS = integer('TOKEN_TAP_JWKS_COOLDOWN_MS', 'positive', 10_000, "least time between two fetches of one IdP's signing keys");
export const VERIFY_MAX_WAIT_MS = integer('TOKEN_TAP_VERIFY_MAX_WAIT_MS', 'non-negative', 180_000, "how long a capture waits in the spool for an IdP's keys");
export const REFUSAL_SUMMARY_MS = integer('TOKEN_TAP_REFUSAL_SUMMARY_MS', 'positive', DEFAULT_REFUSAL_SUMMARY_MS, 'refusals are summarised per this interval (100 to 3600000)', {
  within: { min: 100, max: 3_600_000, problem: (value) => `TOKEN_TAP_REFUSAL_SUMMARY_MS must be from 100 to 3600000 (an hour), got ${value}` },
});

// The TokenVault API (config/token-vault.ts).
export const API_LISTEN = text('TOKEN_TAP_API_LISTEN', '127.0.0.1:50052', 'TokenVault API listen address, or off');
export const ALLOW_INSECURE_API = flag('TOKEN_TAP_ALLOW_INSECURE_API', 'the API may listen beyond loopback without TLS');
export const API_AUTO_REFRESH_SECONDS = integer('TOKEN_TAP_API_AUTO_REFRESH_SECONDS', 'non-negative', 0, 'GetGrant refreshes first when the access token expires within this');
export const API_PG_POOL_SIZE = integer('TOKEN_TAP_API_PG_POOL_SIZE', 'positive', 4, "the API's own Postgres connections");
export const REFRESH_APPLY_WINDOW_MS = integer('TOKEN_TAP_REFRESH_APPLY_WINDOW_MS', 'positive', 60_000, "how long a refresh's answer may take to reach Postgres");
export const AUDIT_RELAXED_COMMIT = flag('TOKEN_TAP_AUDIT_RELAXED_COMMIT', 'access_events rows commit without waiting for the WAL flush');

// The RFC 8693 token exchange (config/exchange.ts).
export const EXCHANGE_LISTEN = text('TOKEN_TAP_EXCHANGE_LISTEN', 'off', 'token exchange listener (POST /oauth2/token), or off');
export const EXCHANGE_TLS_CERT = path('TOKEN_TAP_EXCHANGE_TLS_CERT', "PEM certificate chain of the exchange's TLS; required beyond loopback");
export const EXCHANGE_TLS_KEY = path('TOKEN_TAP_EXCHANGE_TLS_KEY', 'PEM private key of TOKEN_TAP_EXCHANGE_TLS_CERT');
export const EXCHANGE_CONFIG = path('TOKEN_TAP_EXCHANGE_CONFIG', "the exchange's YAML file; required when its listener is on");
export const EXCHANGE_MIN_TTL_SECONDS = integer('TOKEN_TAP_EXCHANGE_MIN_TTL_SECONDS', 'non-negative', 60, 'an exchange refreshes first when the access token expires within this');

// Postgres timeouts (config/postgres.ts): the capture writer's (TOKEN_TAP_PG_*) and the API's (TOKEN_TAP_API_PG_*).
// A query timeout left unset follows its statement timeout; its default here is the one of the default statement timeout.
export const PG_TIMEOUTS = {
  TOKEN_TAP_PG: {
    connect: integer('TOKEN_TAP_PG_CONNECT_TIMEOUT_MS', 'positive', 5_000, 'capture writer: longest wait to connect or for a free connection'),
    statement: integer('TOKEN_TAP_PG_STATEMENT_TIMEOUT_MS', 'positive', 10_000, 'capture writer: statement_timeout'),
    query: integer('TOKEN_TAP_PG_QUERY_TIMEOUT_MS', 'positive', 12_000, 'capture writer: the client gives up on a query Postgres does not answer', { defaultDoc: 'statement + `2000`' }),
    idleInTransaction: integer('TOKEN_TAP_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 'positive', 10_000, 'capture writer: idle_in_transaction_session_timeout'),
  },
  TOKEN_TAP_API_PG: {
    connect: integer('TOKEN_TAP_API_PG_CONNECT_TIMEOUT_MS', 'positive', 2_000, 'API: longest wait to connect or for a free connection'),
    statement: integer('TOKEN_TAP_API_PG_STATEMENT_TIMEOUT_MS', 'positive', 2_000, 'API: statement_timeout'),
    query: integer('TOKEN_TAP_API_PG_QUERY_TIMEOUT_MS', 'positive', 2_250, 'API: the client gives up on a query Postgres does not answer', { defaultDoc: 'statement + `250`' }),
    idleInTransaction: integer('TOKEN_TAP_API_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 'positive', 180_000, "API: idle_in_transaction_session_timeout"),
  },
} as const;
export const COMMIT_DURABILITY: ChoiceSetting<CommitDurability> = {
  name: 'TOKEN_TAP_COMMIT_DURABILITY',
  kind: 'choice',
  choices: COMMIT_DURABILITIES,
  default: 'on',
  doc: 'synchronous_commit of every capture, refresh, revocation, erasure and durable audit commit',
  problem: (raw) =>
    `TOKEN_TAP_COMMIT_DURABILITY must be one of ${COMMIT_DURABILITIES.join(', ')} (synchronous_commit of capture, refresh and audit commits; ` +
    `off and local would let an acknowledged capture be lost after the spool deleted it), got "${raw}"`,
};
export const LOG_LEVEL = text('LOG_LEVEL', 'info', 'pino level (--log-level wins)');
export const PG_KEEPALIVE_MS = integer('TOKEN_TAP_PG_KEEPALIVE_MS', 'positive', 10_000, 'TCP keepalive of every Postgres connection (writer and API)');

/** Every declared setting, in the order docs/configuration.md lists them. */
export const SETTINGS: readonly Setting[] = [
  LISTEN, ALLOW_REMOTE_EXTPROC, ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS, MAX_BODY_BYTES, PG_POOL_SIZE,
  PG_TIMEOUTS.TOKEN_TAP_PG.connect, PG_TIMEOUTS.TOKEN_TAP_PG.statement, PG_TIMEOUTS.TOKEN_TAP_PG.query, PG_TIMEOUTS.TOKEN_TAP_PG.idleInTransaction, PG_KEEPALIVE_MS,
  COMMIT_DURABILITY, LOG_LEVEL, API_LISTEN, ALLOW_INSECURE_API, API_AUTO_REFRESH_SECONDS, AUDIT_RELAXED_COMMIT, API_PG_POOL_SIZE,
  PG_TIMEOUTS.TOKEN_TAP_API_PG.connect, PG_TIMEOUTS.TOKEN_TAP_API_PG.statement, PG_TIMEOUTS.TOKEN_TAP_API_PG.query, PG_TIMEOUTS.TOKEN_TAP_API_PG.idleInTransaction,
  REFRESH_APPLY_WINDOW_MS, JWKS_COOLDOWN_MS, VERIFY_MAX_WAIT_MS, HOOK_LISTEN, REFUSAL_SUMMARY_MS,
  EXCHANGE_LISTEN, EXCHANGE_TLS_CERT, EXCHANGE_TLS_KEY, EXCHANGE_CONFIG, EXCHANGE_MIN_TTL_SECONDS,
  SPOOL_DIR, SPOOL_MAX_BYTES, SPOOL_FSYNC_MS, SPOOL_GRACE_SECONDS, SHUTDOWN_GRACE_MS, OPS_LISTEN,
  CAPTURE_NICE, CAPTURE_BACKLOG, EXTPROC_THREAD, CAPTURE_GATHER_MS,
];

/**
 * An integer setting (its default when unset, or `fallback` when the default follows another setting);
 * a bad or out-of-bounds value joins `problems` with the same message the loaders always gave.
 */
export function readInteger(env: NodeJS.ProcessEnv, setting: IntegerSetting, problems: string[], fallback = setting.default): number {
  const read = setting.kind === 'positive' ? positiveInteger : nonNegativeInteger;
  const value = read(env, setting.name, fallback, problems);
  const within = setting.within;
  if (within && ((within.min !== undefined && value < within.min) || (within.max !== undefined && value > within.max))) problems.push(within.problem(value));
  return value;
}

/** A boolean setting; anything but true/1/false/0 joins `problems`. */
export function readFlag(env: NodeJS.ProcessEnv, setting: BooleanSetting, problems: string[]): boolean {
  return readBoolean(env, setting.name, problems);
}

/** A choice setting (its default when unset or blank); anything else joins `problems`. */
export function readChoice<T extends string>(env: NodeJS.ProcessEnv, setting: ChoiceSetting<T>, problems: string[]): T {
  const raw = (env[setting.name] ?? '').trim().toLowerCase();
  if (raw === '') return setting.default;
  if ((setting.choices as readonly string[]).includes(raw)) return raw as T;
  problems.push(setting.problem(env[setting.name]!));
  return setting.default;
}

/** The default as docs/configuration.md's table shows it. */
export function documentedDefault(setting: Setting): string {
  return setting.defaultDoc ?? `\`${String(setting.default)}\``;
}

/** The declared settings as a Markdown table (variable, default, doc): the rows docs/configuration.md must agree with. */
export function renderSettingsTable(settings: readonly Setting[] = SETTINGS): string {
  const rows = settings.map((setting) => `| \`${setting.name}\` | ${documentedDefault(setting)} | ${setting.doc} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
