// Environment and flags → a typed config. Every problem is reported at once, each saying what
// to set; no value of a secret ever appears in a message.
import type { LevelWithSilent } from 'pino';
import { KeyRingError, parseKeyRing, type KeyRing } from './vault/crypto.js';

export interface HostPort {
  host: string;
  port: number;
}

export interface SidecarConfig {
  listen: HostPort;
  databaseUrl: string;
  keyRing: KeyRing;
  logLevel: LevelWithSilent;
  /** Largest response body collected from Envoy, and largest decoded body parsed. */
  maxBodyBytes: number;
  poolSize: number;
}

export interface SidecarFlags {
  listen?: string;
  logLevel?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

export const DEFAULT_SIDECAR_LISTEN = '127.0.0.1:50051';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parseHostPort(text: string, what: string): HostPort {
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number.parseInt(match[3]!, 10) : NaN;
  if (!match || port > 65535) throw new Error(`${what} must be HOST:PORT (for example 127.0.0.1:50051), got "${text}"`);
  return { host: match[1] ?? match[2]!, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function positiveInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number.parseInt(raw, 10) <= 0) {
    problems.push(`${name} must be a positive integer, got "${raw}"`);
    return fallback;
  }
  return Number.parseInt(raw, 10);
}

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

  if (problems.length > 0 || !keyRing) throw new ConfigError(problems);
  return { listen, databaseUrl, keyRing, logLevel: logLevel as LevelWithSilent, maxBodyBytes, poolSize };
}
