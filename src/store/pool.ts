// The Postgres pool. A backend that dies (restart, failover, idle kill) emits `error` on the pool;
// unhandled, that would crash the process, so it is logged and counted instead.
import pg from 'pg';
import type { Logger } from 'pino';
import { errorCode } from './errors.js';

export interface PoolOptions {
  databaseUrl: string;
  max?: number;
  logger?: Logger;
  onError?: () => void;
  applicationName?: string;
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.databaseUrl,
    max: options.max ?? 4,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: options.applicationName ?? 'token-tap',
  });
  // A checked-out client whose backend dies emits `error` as well as failing its query; the
  // query's rejection is what the caller handles, so the event only needs a listener.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  pool.on('error', (error) => {
    options.onError?.();
    options.logger?.warn({ err: { message: error.message, code: (error as { code?: string }).code } }, 'idle Postgres connection failed');
  });
  return pool;
}

/** A connection string with the password replaced, for messages. */
export function describeDatabaseUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}

// Postgres unreachable or going away (connection exceptions, admin shutdown, too many clients),
// or reachable but not yet migrated (the sidecar started while it was down and is still retrying).
export function isPostgresUnavailable(error: unknown): boolean {
  const code = errorCode(error);
  // pg's pool gives up waiting for a free connection with this message and no code.
  if ((error as Error)?.message === 'timeout exceeded when trying to connect') return true;
  if (code === undefined) return false;
  return /^(08|57P)/.test(code) || ['53300', '42P01', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND'].includes(code);
}

/** Runs `work` in one transaction on a client of its own: COMMIT after it, ROLLBACK if it throws. */
export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

