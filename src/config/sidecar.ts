// The sidecar's environment and flags → a typed config. Every problem is reported at once, each saying what
// to set; no value of a secret ever appears in a message.
import path from 'node:path';
import type { LevelWithSilent } from 'pino';
import { loadIdpConfig, type IdpVerificationSettings } from './idp-file.js';
import { readCommitDurability, readPostgresTimeouts } from './postgres.js';
import type { CommitDurability, PostgresTimeouts } from '../store/pool-settings.js';
import { parseRouteIdps, type RouteIdps } from './route-idps.js';
import { readTlsFiles, readTokenVaultConfig, type ApiTls, type TokenVaultConfig } from './token-vault.js';
import { ConfigError, formatListenAddress, isLoopbackOnly, parseHostPort, parseListenAddress, type HostPort, type ListenAddress } from './values.js';
import * as settings from './settings.js';
import { readFlag, readInteger, readSet, readText } from './settings.js';
import { KeyRingError, parseKeyRing, type KeyRing } from '../keys/key-ring.js';
import { HOOK_CONFIG_ENV, loadHookConfig, type HookConfig } from './hook-file.js';
import { asError } from '../lib/errors.js';
import { readExchangeSettings, type ExchangeSettings } from './exchange.js';
import { DURATION_RULE, parseDuration, type RefreshTokenPolicy } from './refresh-token-policy.js';

export interface SidecarConfig {
  /** ext_proc: a Unix socket or loopback unless allowRemoteExtProc. */
  listen: ListenAddress;
  /** --allow-remote-extproc / TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true: ext_proc may listen beyond loopback (with mTLS, or the opt-in below). */
  allowRemoteExtProc: boolean;
  /**
   * TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true: a remote ext_proc without client certificates, for
   * clusters whose NetworkPolicy is the only guard; warned at every start.
   */
  allowRemoteExtProcWithoutMtls: boolean;
  /** TOKEN_TAP_EXTPROC_TLS_CERT/_KEY (and _CLIENT_CA for mTLS): ext_proc speaks TLS to Envoy. */
  extProcTls: ApiTls | undefined;
  databaseUrl: string;
  keyRing: KeyRing;
  logLevel: LevelWithSilent;
  /** TOKEN_TAP_GC_METRICS: the GC duration histogram among Node's process metrics (a callback per GC). */
  gcMetrics: boolean;
  /** Largest response body collected from Envoy, and largest decoded body parsed. */
  maxBodyBytes: number;
  poolSize: number;
  /** Timeouts of the capture writer's Postgres connections (TOKEN_TAP_PG_*_MS). */
  postgres: PostgresTimeouts;
  /** synchronous_commit of every write transaction and durable audit row, writer and API alike (TOKEN_TAP_COMMIT_DURABILITY). */
  commitDurability: CommitDurability;
  /** Where captures wait, encrypted, until Postgres has them (TOKEN_TAP_SPOOL_DIR, absolute). */
  spoolDir: string;
  /** Spool size cap; at the cap new captures are dropped and counted (the login goes on). */
  spoolMaxBytes: number;
  /** How long a capture waits for company before the spool's fsync (group commit). */
  spoolFsyncMs: number;
  /**
   * How long a spool segment already in Postgres is kept (TOKEN_TAP_SPOOL_GRACE_SECONDS): a Postgres
   * that loses recent commits (an async standby promoted) gets them again from a restart.
   */
  spoolGraceMs: number;
  /** HTTP listener for /metrics, /healthz and /readyz. */
  opsListen: HostPort;
  /** On SIGTERM: how long open streams and the flush to Postgres may take before exiting. */
  shutdownGraceMs: number;
  /** Niceness the sidecar runs at, so Envoy gets the CPU first on a busy machine. 0: off. */
  captureNice: number;
  /** Finished responses waiting for capture work, at most; beyond, dropped and counted. */
  captureBacklog: number;
  /** How long finished responses gather before their capture work starts (ms). */
  captureGatherMs: number;
  /**
   * Serve Envoy's streams on a worker thread of their own (TOKEN_TAP_EXTPROC_THREAD): buffered-mode
   * replies then never queue behind capture work, for a second V8 isolate (~20 MB).
   */
  extProcThread: boolean;
  /** Route (HTTPRoute rule or xDS route name) → IdP, for routes that carry no x-token-tap-idp metadata (TOKEN_TAP_ROUTE_IDPS). */
  routeIdps: RouteIdps;
  /** The TokenVault API, IdP client credentials and retention (src/api/config.ts). */
  vault: TokenVaultConfig;
  /** Okta's token inline hook (TOKEN_TAP_HOOK_LISTEN, TOKEN_TAP_HOOK_CONFIG); undefined: off. */
  hook: { listen: HostPort; config: HookConfig } | undefined;
  /** The RFC 8693 token exchange (TOKEN_TAP_EXCHANGE_LISTEN, TOKEN_TAP_EXCHANGE_CONFIG); undefined: off. */
  exchange: ExchangeSettings | undefined;
  /** Which IdPs' id_tokens are verified before they are stored, and how the keys are fetched. */
  verification: VerificationConfig;
  /**
   * TOKEN_TAP_REFUSAL_SUMMARY_MS: refused Okta hook calls and token responses that are no token
   * response get a row (and a log line) of their own once per kind and this interval; the rest of
   * the interval one row with their count.
   */
  refusalSummaryMs: number;
  /** The refresh-token policy runner: the policies of TOKEN_TAP_IDP_CONFIG and TOKEN_TAP_POLICY_*. */
  policy: PolicyConfig;
}

export interface PolicyConfig {
  policies: ReadonlyMap<string, RefreshTokenPolicy>;
  intervalMs: number;
  maxPerRun: number;
  maxPerIdp: number;
}

export interface VerificationConfig {
  /** By IdP name; an IdP not here is stored unverified (and named in a warning at start). */
  idps: ReadonlyMap<string, IdpVerificationSettings>;
  /** Least time between two fetches of one IdP's JWKS (an unknown `kid` cannot make it more often). */
  jwksCooldownMs: number;
  /** How long a capture waits in the spool for an IdP's keys that cannot be fetched, from its arrival. */
  maxWaitMs: number;
}

export interface SidecarFlags {
  listen?: string;
  allowRemoteExtproc?: boolean;
  /** TokenVault API listen address, or "off". */
  apiListen?: string;
  logLevel?: string;
  /** Okta token inline hook listen address, or "off" (default). */
  hookListen?: string;
  /** Token exchange listen address, or "off" (default). */
  exchangeListen?: string;
}

export const DEFAULT_SIDECAR_LISTEN = settings.LISTEN.default;
export const DEFAULT_OPS_LISTEN = settings.OPS_LISTEN.default;
export const DEFAULT_SPOOL_DIR = settings.SPOOL_DIR.default;
/** TOKEN_TAP_SPOOL_DIR, absolute (relative to the working directory); `keys rotate` reads it too. */
export function spoolDirFrom(env: NodeJS.ProcessEnv): string {
  return path.resolve(readText(env, settings.SPOOL_DIR, { orBlank: true }));
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function loadSidecarConfig(env: NodeJS.ProcessEnv, flags: SidecarFlags = {}): SidecarConfig {
  const problems: string[] = [];

  let listen: ListenAddress = parseHostPort(DEFAULT_SIDECAR_LISTEN, '--listen');
  try {
    listen = parseListenAddress(flags.listen ?? readText(env, settings.LISTEN), '--listen');
  } catch (error) {
    problems.push(asError(error).message);
  }
  // Whoever reaches ext_proc can write grants (design §5): only Envoy, in the same pod, may.
  const allowRemoteExtProc = flags.allowRemoteExtproc === true || readFlag(env, settings.ALLOW_REMOTE_EXTPROC, problems);
  if (!isLoopbackOnly(listen) && !allowRemoteExtProc) {
    problems.push(
      `--listen ${formatListenAddress(listen)} is reachable from other machines, and whoever reaches ext_proc can write grants: ` +
        'listen on unix:/path (a socket Envoy shares) or 127.0.0.1:PORT, or pass --allow-remote-extproc (TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true) ' +
        'with TOKEN_TAP_EXTPROC_TLS_CERT, _KEY and _CLIENT_CA for mTLS to Envoy',
    );
  }
  const extProcTls = readTlsFiles(env, settings.EXTPROC_TLS, problems);
  // A remote ext_proc is defended by mTLS: without it, whoever gets past the network (a NetworkPolicy
  // that is missing, misapplied or not enforced by the CNI) writes grants. Going without it takes a
  // second, explicit opt-in.
  const allowRemoteExtProcWithoutMtls = readFlag(env, settings.ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS, problems);
  if (allowRemoteExtProc && !env[settings.EXTPROC_TLS.clientCa] && !allowRemoteExtProcWithoutMtls) {
    problems.push(
      '--allow-remote-extproc (TOKEN_TAP_ALLOW_REMOTE_EXTPROC) needs mTLS to Envoy: set TOKEN_TAP_EXTPROC_TLS_CERT, TOKEN_TAP_EXTPROC_TLS_KEY and TOKEN_TAP_EXTPROC_TLS_CLIENT_CA ' +
        '(Envoy must present a certificate that CA signed); only where a NetworkPolicy alone guards ext_proc, set TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true',
    );
  }
  if (allowRemoteExtProcWithoutMtls && !allowRemoteExtProc) {
    problems.push(
      'TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true only means something with --allow-remote-extproc (TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true): unset it',
    );
  }

  const databaseUrl = readSet(env, settings.DATABASE_URL) ?? '';
  if (databaseUrl === '') {
    problems.push('DATABASE_URL is not set: set it to a Postgres connection string, e.g. postgres://user:pass@host:5432/db');
  } else if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL must start with postgres:// or postgresql://');
  }

  let keyRing: KeyRing | undefined;
  const keys = readSet(env, settings.KEYS) ?? '';
  if (keys === '') {
    problems.push('TOKEN_TAP_KEYS is not set: set it to "k1:<32 random bytes, base64>" (generate with: openssl rand -base64 32)');
  } else {
    try {
      keyRing = parseKeyRing(keys, env[settings.FINGERPRINT_KEY.name], env[settings.SEAL_FORMAT.name]);
    } catch (error) {
      if (!(error instanceof KeyRingError)) throw error;
      problems.push(error.message);
    }
  }

  const logLevel = (flags.logLevel ?? readText(env, settings.LOG_LEVEL)).toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`log level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);

  const maxBodyBytes = readInteger(env, settings.MAX_BODY_BYTES, problems);
  const poolSize = readInteger(env, settings.PG_POOL_SIZE, problems);
  const postgres = readPostgresTimeouts(env, 'TOKEN_TAP_PG', problems);
  const commitDurability = readCommitDurability(env, problems);

  const spoolDir = spoolDirFrom(env);
  const spoolMaxBytes = readInteger(env, settings.SPOOL_MAX_BYTES, problems);
  const spoolFsyncMs = readInteger(env, settings.SPOOL_FSYNC_MS, problems);
  const spoolGraceSeconds = readInteger(env, settings.SPOOL_GRACE_SECONDS, problems);
  let opsListen: HostPort = parseHostPort(DEFAULT_OPS_LISTEN, 'TOKEN_TAP_OPS_LISTEN');
  try {
    opsListen = parseHostPort(readText(env, settings.OPS_LISTEN, { orBlank: true }), settings.OPS_LISTEN.name);
  } catch (error) {
    problems.push(asError(error).message);
  }
  const shutdownGraceMs = readInteger(env, settings.SHUTDOWN_GRACE_MS, problems);
  const captureNice = readInteger(env, settings.CAPTURE_NICE, problems);
  const captureBacklog = readInteger(env, settings.CAPTURE_BACKLOG, problems);
  const captureGatherMs = readInteger(env, settings.CAPTURE_GATHER_MS, problems);
  const extProcThread = readFlag(env, settings.EXTPROC_THREAD, problems);
  const gcMetrics = readFlag(env, settings.GC_METRICS, problems);

  const idps = loadIdpConfig(env, problems);
  const vault = readTokenVaultConfig(env, flags, problems, idps.clients);
  const jwksCooldownMs = readInteger(env, settings.JWKS_COOLDOWN_MS, problems);
  const maxWaitMs = readInteger(env, settings.VERIFY_MAX_WAIT_MS, problems);
  const hook = readHook(env, flags, problems);
  const exchange = readExchangeSettings(env, flags.exchangeListen, problems);
  const routeIdps = parseRouteIdps(readSet(env, settings.ROUTE_IDPS), problems, settings.ROUTE_IDPS.name);
  const refusalSummaryMs = readInteger(env, settings.REFUSAL_SUMMARY_MS, problems);
  const policy = readPolicy(env, idps.policies, problems);
  // Fingerprints derived from the active key change with it: during a key rollout the policy's
  // rotations_seen and refresh_rotates would count a token handed back as a rotation.
  if (policy.policies.size > 0 && !env[settings.FINGERPRINT_KEY.name]) {
    problems.push(
      `${settings.FINGERPRINT_KEY.name} is not set, and ${[...policy.policies.keys()].join(', ')} ${policy.policies.size === 1 ? 'has' : 'have'} a refresh_token_policy: the policy tells a rotated refresh token by its fingerprint, which without that key follows the active key of TOKEN_TAP_KEYS; set it (openssl rand -base64 32), the same on every sidecar`,
    );
  }

  if (problems.length > 0 || !keyRing) throw new ConfigError(problems);
  return {
    listen,
    allowRemoteExtProc,
    allowRemoteExtProcWithoutMtls,
    extProcTls,
    databaseUrl,
    keyRing,
    logLevel: logLevel as LevelWithSilent,
    gcMetrics,
    maxBodyBytes,
    poolSize,
    postgres,
    commitDurability,
    spoolDir,
    spoolMaxBytes,
    spoolFsyncMs,
    spoolGraceMs: spoolGraceSeconds * 1000,
    opsListen,
    shutdownGraceMs,
    captureNice,
    captureBacklog,
    captureGatherMs,
    extProcThread,
    routeIdps,
    vault,
    verification: { idps: idps.verification, jwksCooldownMs, maxWaitMs },
    hook,
    exchange,
    refusalSummaryMs,
    policy,
  };
}

function readPolicy(env: NodeJS.ProcessEnv, policies: ReadonlyMap<string, RefreshTokenPolicy>, problems: string[]): PolicyConfig {
  const raw = env[settings.POLICY_INTERVAL.name];
  let intervalMs = parseDuration(settings.POLICY_INTERVAL.default)!;
  if (raw !== undefined && raw !== '') {
    const parsed = parseDuration(raw);
    if (parsed === undefined) problems.push(`${settings.POLICY_INTERVAL.name} must be ${DURATION_RULE}, got "${raw}"`);
    else intervalMs = parsed;
  }
  return {
    policies,
    intervalMs,
    maxPerRun: readInteger(env, settings.POLICY_MAX_PER_RUN, problems),
    maxPerIdp: readInteger(env, settings.POLICY_MAX_PER_IDP, problems),
  };
}

function readHook(env: NodeJS.ProcessEnv, flags: SidecarFlags, problems: string[]): SidecarConfig['hook'] {
  const listenText = flags.hookListen ?? readText(env, settings.HOOK_LISTEN);
  if (listenText.trim().toLowerCase() === 'off') {
    if (env[HOOK_CONFIG_ENV])
      problems.push(
        `${HOOK_CONFIG_ENV} is set but the Okta hook listener is off: set --hook-listen HOST:PORT (TOKEN_TAP_HOOK_LISTEN), or unset ${HOOK_CONFIG_ENV}`,
      );
    return undefined;
  }
  let listen: HostPort | undefined;
  try {
    listen = parseHostPort(listenText, '--hook-listen (TOKEN_TAP_HOOK_LISTEN)');
  } catch (error) {
    problems.push(`${asError(error).message}, or "off"`);
  }
  const config = loadHookConfig(env, problems);
  return listen && config ? { listen, config } : undefined;
}
