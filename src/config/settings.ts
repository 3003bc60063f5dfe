// Every environment setting declared once, as data: its name, its kind (how it is read), its default and
// its doc. The loaders read through these, `--help` quotes their names and defaults, and docs/configuration.md's
// table is rendered from them (config/settings-docs.ts; test/unit/settings.test.ts fails when it is stale).
import { DEFAULT_REFUSAL_SUMMARY_MS } from '../lib/refusal-summary.js';
import { readAge } from '../store/purge.js';
import { COMMIT_DURABILITIES, type CommitDurability } from '../store/pool-settings.js';
import { nonNegativeInteger, positiveInteger, readBoolean } from './values.js';

interface Declared {
  readonly name: string;
  /** What it is for: the meaning cell of its row in docs/configuration.md. */
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

/** Text without which nothing starts (a connection string): no default. */
export interface RequiredSetting extends Declared {
  readonly kind: 'required';
  readonly defaultDoc: '(required)';
}

/** A key or other secret: no default value, ever shown; its value is never quoted in a message or a doc. */
export interface SecretSetting extends Declared {
  readonly kind: 'secret';
  readonly required: boolean;
  /** What happens without it, in words (never a value). */
  readonly defaultDoc: string;
}

/** The path of a file the loader reads (the IdP file, the hook file); unset: none. */
export interface FileSetting extends Declared {
  readonly kind: 'file';
  readonly defaultDoc: '(none)';
}

/** An age such as 90d, 12h, 30m or 45s; unset: none (`defaultDoc` says what that means). */
export interface DurationSetting extends Declared {
  readonly kind: 'duration';
  readonly defaultDoc: string;
}

/** A list of entries the loader parses itself (separated by commas or whitespace); unset: empty. */
export interface ListSetting extends Declared {
  readonly kind: 'list';
  readonly defaultDoc: '(none)';
}

/**
 * PEM files PREFIX_CERT and PREFIX_KEY (a server certificate chain and its key, set together) and
 * PREFIX_CLIENT_CA (the CA a client certificate must chain to: mTLS). Two rows in the docs.
 */
export interface TlsFilesSetting extends Declared {
  readonly kind: 'tls-files';
  readonly cert: string;
  readonly key: string;
  readonly clientCa: string;
  /** The doc of the client CA row (`doc` is the certificate and key's). */
  readonly clientCaDoc: string;
  readonly defaultDoc: '(none)';
}

/** Read by tests only (refused outside NODE_ENV=test): declared, never documented. */
export interface TestOnlySetting extends Omit<Declared, 'doc'> {
  readonly kind: 'test-only';
  readonly why: string;
}

export type Setting =
  | IntegerSetting | BooleanSetting | TextSetting | ChoiceSetting | RequiredSetting | SecretSetting | FileSetting
  | DurationSetting | ListSetting | TlsFilesSetting | TestOnlySetting;

const integer = (name: string, kind: IntegerSetting['kind'], value: number, doc: string, more: Partial<Pick<IntegerSetting, 'within' | 'defaultDoc'>> = {}): IntegerSetting => ({ name, kind, default: value, doc, ...more });
const flag = (name: string, doc: string): BooleanSetting => ({ name, kind: 'boolean', default: false, doc });
const text = (name: string, value: string, doc: string): TextSetting => ({ name, kind: 'text', default: value, doc });
const file = (name: string, doc: string): FileSetting => ({ name, kind: 'file', defaultDoc: '(none)', doc });
const duration = (name: string, defaultDoc: string, doc: string): DurationSetting => ({ name, kind: 'duration', defaultDoc, doc });
const tlsFiles = (prefix: string, doc: string, clientCaDoc: string): TlsFilesSetting => ({
  name: `${prefix}_CERT`, kind: 'tls-files', cert: `${prefix}_CERT`, key: `${prefix}_KEY`, clientCa: `${prefix}_CLIENT_CA`, defaultDoc: '(none)', doc, clientCaDoc,
});

// What the sidecar cannot start without, and its keys.
export const DATABASE_URL: RequiredSetting = { name: 'DATABASE_URL', kind: 'required', defaultDoc: '(required)', doc: 'Postgres connection string: Postgres itself, or a pooler in session mode (PgBouncer `pool_mode = session`); transaction mode is not supported, since migrations and the policy runner hold session advisory locks' };
export const KEYS: SecretSetting = { name: 'TOKEN_TAP_KEYS', kind: 'secret', required: true, defaultDoc: '(required)', doc: 'key ring `id1:base64key,id0:base64key`: 32-byte keys, the first one encrypts, all decrypt' };
export const FINGERPRINT_KEY: SecretSetting = {
  name: 'TOKEN_TAP_FINGERPRINT_KEY', kind: 'secret', required: false, defaultDoc: '(derived from the active key, with a warning)',
  doc: '32 bytes, base64: the key of token fingerprints. Set it, the same on every sidecar, and never rotate it with `TOKEN_TAP_KEYS`: otherwise sidecars with different active keys (a key rollout) disagree on fingerprints, and profile correlation and event matching break across them. Required when an IdP has a `refresh_token_policy`',
};
// Parsed with the key ring (keys/key-ring.ts), which gives its messages.
export const SEAL_FORMAT = text('TOKEN_TAP_SEAL_FORMAT', '2', '`3`: seal new values in format 3 (session keys: less CPU per capture), once no sidecar of a release that cannot open it is left or may be rolled back to ([*Upgrading*](upgrading.md)); every release from this one opens both');

// The sidecar's own listeners, ext_proc and limits (config/sidecar.ts).
export const LISTEN = text('TOKEN_TAP_LISTEN', '127.0.0.1:50051', 'ext_proc listen address, `unix:/path` or a loopback `HOST:PORT` (`--listen` wins). The socket is made `0660`: Envoy must share its group');
export const OPS_LISTEN = text('TOKEN_TAP_OPS_LISTEN', '127.0.0.1:9464', '`/metrics`, `/healthz`, `/readyz`');
export const HOOK_LISTEN = text('TOKEN_TAP_HOOK_LISTEN', 'off', "Okta token inline hook listener (HTTP, `POST /okta/token-hook`, behind Envoy's `--okta-hook` route); `serve --hook-listen` wins");
export const ALLOW_REMOTE_EXTPROC = flag('TOKEN_TAP_ALLOW_REMOTE_EXTPROC', '`true` lets ext_proc listen beyond loopback (as `--allow-remote-extproc`), only with mTLS (`TOKEN_TAP_EXTPROC_TLS_CLIENT_CA`) or the opt-in below; a warning is logged at every start');
export const ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS = flag('TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS', '`true`: a remote ext_proc without client certificates, for clusters where a NetworkPolicy is the only guard; warned at every start (whoever reaches the port writes grants)');
export const EXTPROC_TLS = tlsFiles('TOKEN_TAP_EXTPROC_TLS', 'PEM certificate chain and key: ext_proc speaks TLS (render Envoy with `--sidecar-tls-cert/--sidecar-tls-key/--sidecar-ca`)', 'with it, Envoy must present a client certificate this CA signed (mTLS); the only safe way to serve ext_proc beyond loopback');
export const MAX_BODY_BYTES = integer('TOKEN_TAP_MAX_BODY_BYTES', 'positive', 1024 * 1024, 'largest response body collected, and largest decoded body parsed');
export const PG_POOL_SIZE = integer('TOKEN_TAP_PG_POOL_SIZE', 'positive', 4, 'Postgres connections');
export const SPOOL_MAX_BYTES = integer('TOKEN_TAP_SPOOL_MAX_BYTES', 'positive', 128 * 1024 * 1024, 'spool cap: beyond it new captures are dropped, counted (`token_tap_captures_dropped_total{reason="spool_full"}`) and logged; logins go on', {
  defaultDoc: '`134217728` (128 MiB)',
  within: { min: 64 * 1024, problem: (value) => `TOKEN_TAP_SPOOL_MAX_BYTES must be at least 65536 (64 KiB), got ${value}` },
});
export const SPOOL_FSYNC_MS = integer('TOKEN_TAP_SPOOL_FSYNC_MS', 'non-negative', 5, 'group-commit interval of the spool (0 to 1000)', {
  within: { max: 1000, problem: (value) => `TOKEN_TAP_SPOOL_FSYNC_MS must be at most 1000 (a capture waits that long to be durable), got ${value}` },
});
export const SPOOL_GRACE_SECONDS = integer('TOKEN_TAP_SPOOL_GRACE_SECONDS', 'non-negative', 60, 'how long a spool segment already in Postgres is kept (0 to 86400): a restart within it replays it, so a Postgres that lost its last commits (an async standby promoted) gets them again; Postgres ignores capture ids it has. It counts against `TOKEN_TAP_SPOOL_MAX_BYTES`: a full spool deletes such segments first, oldest first. A restart replays (and counts again in `token_tap_captures_total` and the `captures recorded` log counts) what the window holds', {
  within: { max: 86_400, problem: (value) => `TOKEN_TAP_SPOOL_GRACE_SECONDS must be at most 86400 (a day), got ${value}` },
});
export const SPOOL_DIR = text('TOKEN_TAP_SPOOL_DIR', '.token-tap/spool', "the encrypted local spool every capture is written to before Postgres; put it on a volume that outlives the pod (the StatefulSet's claim per pod in Kubernetes, a named volume in compose). One sidecar per directory: the lock is an OS file lock (`flock`, held by a `flock(1)` child of the sidecar, util-linux) on `lock` in the directory, so it holds across containers, network namespaces and, on NFS, hosts; it is freed the moment its holder dies, so a restart right after a crash takes it at once; a second sidecar is refused with the holder's host, PID, start time and writer id (from `holder.json`). Should the `flock(1)` child alone die (killed by hand, the OOM killer), the sidecar takes the lock again at once; if another process took it meanwhile, the sidecar stops capturing, answers 503 on `/healthz` and `/readyz`, and exits 1 (its spool stays on disk, nothing of it deleted). Files there are only read under the names the spool writes, and no symbolic link in it is followed; only regular files are opened (a FIFO or device under a spool name is logged and left alone), and files of any size are walked a 1 MiB window at a time, never read whole. `flock(1)` and its `cat(1)` run from `/usr/bin:/bin` by absolute path with only that `PATH` in their environment (no `TOKEN_TAP_KEYS`). A `held` there that is not a directory refuses the start; a `checkpoint.json` over 4 MiB is not read (every segment is replayed); a segment name with a sequence past 2^52 is not the spool's (left alone, logged)");
export const SHUTDOWN_GRACE_MS = integer('TOKEN_TAP_SHUTDOWN_GRACE_MS', 'non-negative', 10_000, 'on SIGTERM: half for open streams, half for the flush to Postgres; the rest stays in the spool. Refreshes in flight (TokenVault API) get all of it');
export const CAPTURE_NICE = integer('TOKEN_TAP_CAPTURE_NICE', 'non-negative', 0, "niceness the sidecar runs at (0 to 19; 0 leaves it alone). One thread serves Envoy's streams and does the capture work, so in buffered mode keep 0: a niced sidecar answers Envoy last on a busy machine. In observability mode only, 10 lets Envoy and the app get the CPU first where they share a cgroup with the sidecar (one host or container; a pod's containers have CPU shares of their own)", {
  within: { max: 19, problem: (value) => `TOKEN_TAP_CAPTURE_NICE must be between 0 and 19, got ${value}` },
});
export const CAPTURE_BACKLOG = integer('TOKEN_TAP_CAPTURE_BACKLOG', 'positive', 20_000, 'finished responses waiting for capture work, at most (and 64 MiB of their bodies); beyond, dropped and counted (`reason="capture_backlog_full"`); `token_tap_capture_intake_depth` shows how many wait');
export const CAPTURE_GATHER_MS = integer('TOKEN_TAP_CAPTURE_GATHER_MS', 'non-negative', 10, "how long finished responses gather before their capture work (parsing, sealing, the spool) starts: it runs after the response has gone by, for all of them at once, in slices of 8 that give buffered-mode replies their turn between them (so do the spool's reads and the Postgres writer's sealing)", {
  within: { max: 1_000, problem: (value) => `TOKEN_TAP_CAPTURE_GATHER_MS must be at most 1000, got ${value}` },
});
export const EXTPROC_THREAD = flag('TOKEN_TAP_EXTPROC_THREAD', "`true`: serve Envoy's streams on a worker thread of their own, so buffered-mode replies never queue behind capture work on a busy sidecar (bench/RESULTS.md), for a second V8 isolate (~20 MB more). Should the thread die it is logged and started again on the same address. Observability mode needs no replies: leave it off");
export const ROUTE_IDPS: ListSetting = { name: 'TOKEN_TAP_ROUTE_IDPS', kind: 'list', defaultDoc: '(none)', doc: '`ROUTE=IDP,...`: which route is which IdP where the route carries no `x-token-tap-idp` metadata; ROUTE is `httproute/<namespace>/<route>/<rule name>` or an xDS route name (see [*Which route is which IdP*](deploy.md#which-route-is-which-idp)). `token-tap envoy-gateway` renders it into the Deployment' };

// The IdPs: the IdP file (config/idp-file.ts) and how their keys are fetched.
export const IDP_CONFIG = file('TOKEN_TAP_IDP_CONFIG', "YAML or JSON file with each IdP's pinned issuer and Okta's client id there (id_tokens are verified before they are stored), and its token URL and client credentials for refresh and revocation ([the IdP file](idps.md#the-idp-file))");
export const JWKS_COOLDOWN_MS = integer('TOKEN_TAP_JWKS_COOLDOWN_MS', 'positive', 10_000, "least time between two fetches of one IdP's signing keys; tokens naming an unknown `kid` cannot make fetches more frequent");
export const VERIFY_MAX_WAIT_MS = integer('TOKEN_TAP_VERIFY_MAX_WAIT_MS', 'non-negative', 180_000, "how long a capture waits in the spool for an IdP's keys that cannot be fetched (from its arrival); then it is recorded `unverified` (`jwks_unavailable`)");
// Okta's token inline hook (config/hook-file.ts) and refusals.
export const HOOK_CONFIG = file('TOKEN_TAP_HOOK_CONFIG', "the hook's YAML file (see [*Okta token inline hook*](okta-hook.md)); required when the hook listener is on");
export const REFUSAL_SUMMARY_MS = integer('TOKEN_TAP_REFUSAL_SUMMARY_MS', 'positive', DEFAULT_REFUSAL_SUMMARY_MS, "refusals are summarised per this interval (100 to 3600000): a refused Okta hook call (`unauthenticated`, `bad_request`) gets an `access_events` row and a log line of its own only as the first of its peer and outcome in an interval, and a token response with no token (`idp_error`, `unparseable`, `too_large`, `incomplete`; a profile response refused by its bounds too) a spooled capture and a `capture_events` row only as the first of its IdP, outcome and error code (at most 32 such kinds per IdP, then that IdP's `(other)`); the rest become one row with a `count` (see [*Security model*, *Refusals are cheap*](security-model.md#refusals-are-cheap))", {
  within: { min: 100, max: 3_600_000, problem: (value) => `TOKEN_TAP_REFUSAL_SUMMARY_MS must be from 100 to 3600000 (an hour), got ${value}` },
});

// The TokenVault API (config/token-vault.ts).
export const API_LISTEN = text('TOKEN_TAP_API_LISTEN', '127.0.0.1:50052', 'TokenVault API listen address, or `off` (`serve --api-listen` wins). If it cannot be bound, the sidecar logs an error and captures on without it');
export const API_TLS = tlsFiles('TOKEN_TAP_API_TLS', 'PEM certificate chain and key: the API speaks TLS. Required when `TOKEN_TAP_API_LISTEN` is not loopback', 'with it, callers must present a client certificate this CA signed (mTLS); its CN is recorded with each call');
export const ALLOW_INSECURE_API = flag('TOKEN_TAP_ALLOW_INSECURE_API', '`true`: the API may listen beyond loopback without TLS (a network of its own only); warned at every start');
export const API_AUTO_REFRESH_SECONDS = integer('TOKEN_TAP_API_AUTO_REFRESH_SECONDS', 'non-negative', 0, 'GetGrant refreshes first when the access token expires within this many seconds (keys with the `refresh` operation)');
export const API_PG_POOL_SIZE = integer('TOKEN_TAP_API_PG_POOL_SIZE', 'positive', 4, "the API's own Postgres connections (apart from the capture writer's)");
export const REFRESH_APPLY_WINDOW_MS = integer('TOKEN_TAP_REFRESH_APPLY_WINDOW_MS', 'positive', 60_000, "how long a refresh's answer may take to reach Postgres after the IdP call ends; a refresh claims its grant for the IdP's `timeout_ms` plus this, and only then may another sidecar take the claim over, and not before this long after Postgres came back from an outage (see [*Refresh*](tokenvault-api.md#refresh))");
export const AUDIT_RELAXED_COMMIT = flag('TOKEN_TAP_AUDIT_RELAXED_COMMIT', '`true`: `access_events` rows commit without waiting for the WAL flush (a Postgres crash can lose the last ~200 ms of audit rows); see [*Security model*](security-model.md) for what it buys');
export const FAULT_INJECTION: TestOnlySetting = { name: 'TOKEN_TAP_FAULT_INJECTION', kind: 'test-only', why: 'a failure at the worst moment of a refresh, to prove it loses nothing' };

// Retention (store/purge.ts): `token-tap purge` and the sidecar's timer.
export const GRANT_RETENTION = duration('TOKEN_TAP_GRANT_RETENTION', '(keep)', 'grants not updated for longer than this age (`90d`, `12h`) are deleted by `token-tap purge` and the timer');
export const EVENT_RETENTION = duration('TOKEN_TAP_EVENT_RETENTION', '(keep)', 'capture and access events, quarantined captures and tombstones older than this age (`90d`, `12h`) are deleted by `token-tap purge` and the timer');
export const PURGE_INTERVAL = duration('TOKEN_TAP_PURGE_INTERVAL', '(none)', 'the sidecar runs the purge itself this often (`1h`)');
// The refresh-token policy runner (policy/runner.ts); the policies are per IdP in TOKEN_TAP_IDP_CONFIG.
export const POLICY_INTERVAL = text('TOKEN_TAP_POLICY_INTERVAL', '15m', 'how often the refresh-token policy runs (`30s`, `15m`, `1h`: a whole number and `s`, `m`, `h` or `d`), each run 90 to 110 % of it after the last (jitter); one run at a time across every sidecar on the database. Only IdPs with a `refresh_token_policy` in `TOKEN_TAP_IDP_CONFIG` are acted on: see [*Refresh-token hygiene*](refresh-token-hygiene.md)');
export const POLICY_MAX_PER_RUN = integer('TOKEN_TAP_POLICY_MAX_PER_RUN', 'positive', 500, 'refresh-token policy actions (rotations, expiries) per run, at most; the rest wait for the next run, the longest due first');
export const POLICY_MAX_PER_IDP = integer('TOKEN_TAP_POLICY_MAX_PER_IDP', 'positive', 100, 'refresh-token policy actions per IdP and run, at most');

// The RFC 8693 token exchange (config/exchange.ts).
export const EXCHANGE_LISTEN = text('TOKEN_TAP_EXCHANGE_LISTEN', 'off', 'token exchange listener (POST /oauth2/token), or off');
export const EXCHANGE_TLS = tlsFiles('TOKEN_TAP_EXCHANGE_TLS', 'PEM certificate chain and key: the token exchange speaks TLS. Required when `TOKEN_TAP_EXCHANGE_LISTEN` is not loopback (no opt-out)', 'with it, callers must also present a client certificate this CA signed (mTLS)');
export const EXCHANGE_CONFIG = file('TOKEN_TAP_EXCHANGE_CONFIG', "the token exchange's YAML file (accepted Okta issuers, IdPs and how a user is matched); required when its listener is on: see [*Token exchange*](token-exchange.md)");
export const EXCHANGE_MIN_TTL_SECONDS = integer('TOKEN_TAP_EXCHANGE_MIN_TTL_SECONDS', 'non-negative', 60, 'an exchange refreshes first when the access token expires within this');
export const EXCHANGE_MAX_CONNECTIONS = integer('TOKEN_TAP_EXCHANGE_MAX_CONNECTIONS', 'positive', 256, 'open connections the token exchange listener takes at most; beyond, new ones are closed at once (callers that hold connections open cannot starve the sidecar)');

// Postgres timeouts (config/postgres.ts): the capture writer's (TOKEN_TAP_PG_*) and the API's (TOKEN_TAP_API_PG_*).
// A query timeout left unset follows its statement timeout; its default here is the one of the default statement timeout.
export const PG_TIMEOUTS = {
  TOKEN_TAP_PG: {
    connect: integer('TOKEN_TAP_PG_CONNECT_TIMEOUT_MS', 'positive', 5_000, 'capture writer: longest wait to connect to Postgres or for a free connection'),
    statement: integer('TOKEN_TAP_PG_STATEMENT_TIMEOUT_MS', 'positive', 10_000, 'capture writer: `statement_timeout` (migrations run without it)'),
    query: integer('TOKEN_TAP_PG_QUERY_TIMEOUT_MS', 'positive', 12_000, 'capture writer: the client gives up on a query Postgres does not answer (a partition) and discards the connection; at least the statement timeout. Captures wait in the spool meanwhile', { defaultDoc: 'statement + `2000`' }),
    idleInTransaction: integer('TOKEN_TAP_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 'positive', 10_000, 'capture writer: `idle_in_transaction_session_timeout`, so a transaction cut off from its client does not keep grant rows locked'),
  },
  TOKEN_TAP_API_PG: {
    connect: integer('TOKEN_TAP_API_PG_CONNECT_TIMEOUT_MS', 'positive', 2_000, "the API's connections: as the capture writer's, shorter: with Postgres not answering a call is answered `UNAVAILABLE` within 5 s (the key check gives up after the query timeout, and an `UNAVAILABLE` does not wait for its audit row)"),
    statement: integer('TOKEN_TAP_API_PG_STATEMENT_TIMEOUT_MS', 'positive', 2_000, "the API's `statement_timeout`"),
    query: integer('TOKEN_TAP_API_PG_QUERY_TIMEOUT_MS', 'positive', 2_250, "the API's client-side query timeout; at least the statement timeout", { defaultDoc: 'statement + `250`' }),
    idleInTransaction: integer('TOKEN_TAP_API_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 'positive', 180_000, "the API's `idle_in_transaction_session_timeout`: above the longest IdP `timeout_ms`, as a revocation keeps its grant locked while the IdP answers (a refresh does not: it claims the grant, see [*Refresh*](tokenvault-api.md#refresh))"),
  },
} as const;
export const COMMIT_DURABILITY: ChoiceSetting<CommitDurability> = {
  name: 'TOKEN_TAP_COMMIT_DURABILITY',
  kind: 'choice',
  choices: COMMIT_DURABILITIES,
  default: 'on',
  doc: "what every commit of a capture batch, a refresh, a revocation, an erasure and a durable audit row waits for, set per transaction (`SET LOCAL synchronous_commit`) whatever the database's default: `on` (the WAL flushed on the primary and, with synchronous standbys, on theirs), `remote_apply` (also applied on the synchronous standbys: readable there at once), `remote_write` (the standbys have it in memory only: weaker than `on`). `off` and `local` are refused. See [*Operations*, durability](operations.md#durability)",
  problem: (raw) =>
    `TOKEN_TAP_COMMIT_DURABILITY must be one of ${COMMIT_DURABILITIES.join(', ')} (synchronous_commit of capture, refresh and audit commits; ` +
    `off and local would let an acknowledged capture be lost after the spool deleted it), got "${raw}"`,
};
export const GC_METRICS = flag('TOKEN_TAP_GC_METRICS', '`true`: expose `token_tap_nodejs_gc_duration_seconds` (GC pauses by kind) with the other Node process metrics. Off by default: it runs a callback on every garbage collection, every few captures under load (~15 µs of the main thread per capture at 1,000/s)');
export const LOG_LEVEL = text('LOG_LEVEL', 'info', 'pino level; logs are JSON on stdout, with token and credential fields redacted');
export const PG_KEEPALIVE_MS = integer('TOKEN_TAP_PG_KEEPALIVE_MS', 'positive', 10_000, 'TCP keepalive of every Postgres connection (writer and API)');
// Read by ops/envoy-process.ts: the Envoy the demo, tests and bench start.
export const ENVOY = text('TOKEN_TAP_ENVOY', '.venv/bin/envoy', 'the Envoy binary the demo, tests and bench run');

/** Every declared setting, in the order docs/configuration.md lists them. */
export const SETTINGS: readonly Setting[] = [
  DATABASE_URL, KEYS, FINGERPRINT_KEY,
  LISTEN, ALLOW_REMOTE_EXTPROC, ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS, EXTPROC_TLS, MAX_BODY_BYTES, PG_POOL_SIZE,
  PG_TIMEOUTS.TOKEN_TAP_PG.connect, PG_TIMEOUTS.TOKEN_TAP_PG.statement, PG_TIMEOUTS.TOKEN_TAP_PG.query, PG_TIMEOUTS.TOKEN_TAP_PG.idleInTransaction, PG_KEEPALIVE_MS,
  COMMIT_DURABILITY, LOG_LEVEL, GC_METRICS, API_LISTEN, API_TLS, ALLOW_INSECURE_API, API_AUTO_REFRESH_SECONDS, AUDIT_RELAXED_COMMIT, API_PG_POOL_SIZE,
  PG_TIMEOUTS.TOKEN_TAP_API_PG.connect, PG_TIMEOUTS.TOKEN_TAP_API_PG.statement, PG_TIMEOUTS.TOKEN_TAP_API_PG.query, PG_TIMEOUTS.TOKEN_TAP_API_PG.idleInTransaction,
  REFRESH_APPLY_WINDOW_MS, POLICY_INTERVAL, POLICY_MAX_PER_RUN, POLICY_MAX_PER_IDP, IDP_CONFIG, JWKS_COOLDOWN_MS, VERIFY_MAX_WAIT_MS, HOOK_LISTEN, HOOK_CONFIG, REFUSAL_SUMMARY_MS,
  EXCHANGE_LISTEN, EXCHANGE_TLS, EXCHANGE_CONFIG, EXCHANGE_MIN_TTL_SECONDS, EXCHANGE_MAX_CONNECTIONS,
  GRANT_RETENTION, EVENT_RETENTION, PURGE_INTERVAL,
  SPOOL_DIR, SPOOL_MAX_BYTES, SPOOL_FSYNC_MS, SPOOL_GRACE_SECONDS, SHUTDOWN_GRACE_MS, OPS_LISTEN, ROUTE_IDPS, SEAL_FORMAT,
  CAPTURE_NICE, CAPTURE_BACKLOG, EXTPROC_THREAD, CAPTURE_GATHER_MS, ENVOY, FAULT_INJECTION,
];

/** Every variable name a setting stands for (a TLS group stands for three). */
export function settingNames(setting: Setting): string[] {
  return setting.kind === 'tls-files' ? [setting.cert, setting.key, setting.clientCa] : [setting.name];
}

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

/** A text setting as set, or its default when unset (`orBlank`: also when set to ''). */
export function readText(env: NodeJS.ProcessEnv, setting: TextSetting, { orBlank = false } = {}): string {
  const raw = env[setting.name];
  return raw === undefined || (orBlank && raw === '') ? setting.default : raw;
}

/** The value of a required, secret, file, list or test-only setting; unset or '' is undefined. */
export function readSet(env: NodeJS.ProcessEnv, setting: RequiredSetting | SecretSetting | FileSetting | ListSetting | TestOnlySetting): string | undefined {
  return env[setting.name] || undefined;
}

/** A duration setting in milliseconds (undefined when unset); a malformed age joins `problems`. */
export function readDuration(env: NodeJS.ProcessEnv, setting: DurationSetting, problems: string[]): number | undefined {
  return readAge(env[setting.name], setting.name, problems);
}
