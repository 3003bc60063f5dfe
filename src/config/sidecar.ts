// The sidecar's environment and flags → a typed config. Every problem is reported at once, each saying what
// to set; no value of a secret ever appears in a message.
import path from 'node:path';
import type { LevelWithSilent } from 'pino';
import { readPostgresTimeouts, WRITER_TIMEOUTS, type PostgresTimeouts } from './postgres.js';
import { readTokenVaultConfig, type TokenVaultConfig } from './token-vault.js';
import { ConfigError, nonNegativeInteger, parseHostPort, positiveInteger, type HostPort } from './values.js';
import { KeyRingError, parseKeyRing, type KeyRing } from '../keys/key-ring.js';


export interface SidecarConfig {
  listen: HostPort;
  databaseUrl: string;
  keyRing: KeyRing;
  logLevel: LevelWithSilent;
  /** Largest response body collected from Envoy, and largest decoded body parsed. */
  maxBodyBytes: number;
  poolSize: number;
  /** Timeouts of the capture writer's Postgres connections (TOKEN_TAP_PG_*_MS). */
  postgres: PostgresTimeouts;
  /** Where captures wait, encrypted, until Postgres has them (TOKEN_TAP_SPOOL_DIR, absolute). */
  spoolDir: string;
  /** Spool size cap; at the cap new captures are dropped and counted (the login goes on). */
  spoolMaxBytes: number;
  /** How long a capture waits for company before the spool's fsync (group commit). */
  spoolFsyncMs: number;
  /** HTTP listener for /metrics, /healthz and /readyz. */
  opsListen: HostPort;
  /** On SIGTERM: how long open streams and the flush to Postgres may take before exiting. */
  shutdownGraceMs: number;
  /** Niceness of the main thread (capture work); the ext_proc thread keeps the process's. 0: off. */
  captureNice: number;
  /** Finished responses the ext_proc thread may hand over before the main thread has taken them; beyond, dropped and counted. */
  captureBacklog: number;
  /** The TokenVault API, IdP client credentials and retention (src/api/config.ts). */
  vault: TokenVaultConfig;
}

export interface SidecarFlags {
  listen?: string;
  /** TokenVault API listen address, or "off". */
  apiListen?: string;
  logLevel?: string;
}


export const DEFAULT_SIDECAR_LISTEN = '127.0.0.1:50051';
export const DEFAULT_OPS_LISTEN = '127.0.0.1:9464';
export const DEFAULT_SPOOL_DIR = '.token-tap/spool';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function loadSidecarConfig(env: NodeJS.ProcessEnv, flags: SidecarFlags = {}): SidecarConfig {
  const problems: string[] = [];

  let listen: HostPort = parseHostPort(DEFAULT_SIDECAR_LISTEN, '--listen');
  try {
    listen = parseHostPort(flags.listen ?? env.TOKEN_TAP_LISTEN ?? DEFAULT_SIDECAR_LISTEN, '--listen');
  } catch (error) {
    problems.push((error as Error).message);
  }

  const databaseUrl = env.DATABASE_URL ?? '';
  if (databaseUrl === '') {
    problems.push('DATABASE_URL is not set: set it to a Postgres connection string, e.g. postgres://user:pass@host:5432/db');
  } else if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL must start with postgres:// or postgresql://');
  }

  let keyRing: KeyRing | undefined;
  const keys = env.TOKEN_TAP_KEYS ?? '';
  if (keys === '') {
    problems.push('TOKEN_TAP_KEYS is not set: set it to "k1:<32 random bytes, base64>" (generate with: openssl rand -base64 32)');
  } else {
    try {
      keyRing = parseKeyRing(keys);
    } catch (error) {
      if (!(error instanceof KeyRingError)) throw error;
      problems.push(error.message);
    }
  }

  const logLevel = (flags.logLevel ?? env.LOG_LEVEL ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`log level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);

  const maxBodyBytes = positiveInteger(env, 'TOKEN_TAP_MAX_BODY_BYTES', 1024 * 1024, problems);
  const poolSize = positiveInteger(env, 'TOKEN_TAP_PG_POOL_SIZE', 4, problems);
  const postgres = readPostgresTimeouts(env, 'TOKEN_TAP_PG', WRITER_TIMEOUTS, problems);

  const spoolDir = path.resolve(env.TOKEN_TAP_SPOOL_DIR || DEFAULT_SPOOL_DIR);
  const spoolMaxBytes = positiveInteger(env, 'TOKEN_TAP_SPOOL_MAX_BYTES', 128 * 1024 * 1024, problems);
  if (spoolMaxBytes < 64 * 1024) problems.push(`TOKEN_TAP_SPOOL_MAX_BYTES must be at least 65536 (64 KiB), got ${spoolMaxBytes}`);
  const spoolFsyncMs = nonNegativeInteger(env, 'TOKEN_TAP_SPOOL_FSYNC_MS', 5, problems);
  if (spoolFsyncMs > 1000) problems.push(`TOKEN_TAP_SPOOL_FSYNC_MS must be at most 1000 (a capture waits that long to be durable), got ${spoolFsyncMs}`);
  let opsListen: HostPort = parseHostPort(DEFAULT_OPS_LISTEN, 'TOKEN_TAP_OPS_LISTEN');
  try {
    opsListen = parseHostPort(env.TOKEN_TAP_OPS_LISTEN || DEFAULT_OPS_LISTEN, 'TOKEN_TAP_OPS_LISTEN');
  } catch (error) {
    problems.push((error as Error).message);
  }
  const shutdownGraceMs = nonNegativeInteger(env, 'TOKEN_TAP_SHUTDOWN_GRACE_MS', 10_000, problems);
  const captureNice = nonNegativeInteger(env, 'TOKEN_TAP_CAPTURE_NICE', 10, problems);
  if (captureNice > 19) problems.push(`TOKEN_TAP_CAPTURE_NICE must be between 0 and 19, got ${captureNice}`);
  const captureBacklog = positiveInteger(env, 'TOKEN_TAP_CAPTURE_BACKLOG', 20_000, problems);

  const vault = readTokenVaultConfig(env, flags, problems);

  if (problems.length > 0 || !keyRing) throw new ConfigError(problems);
  return {
    listen,
    databaseUrl,
    keyRing,
    logLevel: logLevel as LevelWithSilent,
    maxBodyBytes,
    poolSize,
    postgres,
    spoolDir,
    spoolMaxBytes,
    spoolFsyncMs,
    opsListen,
    shutdownGraceMs,
    captureNice,
    captureBacklog,
    vault,
  };
}
