// The Postgres pool. A backend that dies (restart, failover, idle kill) emits `error` on the pool;
// unhandled, that would crash the process, so it is logged and counted instead. Every wait on
// Postgres is bounded (pool-settings.ts, read by config/postgres.ts): connecting, each statement on
// the server, each query on the client (for a server that is unreachable and so never cancels
// anything), and TCP keepalive.
import pg from 'pg';
import type { Logger } from 'pino';
import type { CommitDurability, PostgresTimeouts } from './pool-settings.js';
import { isPostgresUnavailable } from './errors.js';

export interface PoolOptions {
  databaseUrl: string;
  max?: number;
  logger?: Logger;
  onError?: () => void;
  applicationName?: string;
  /** Without them (the CLI): a 5 s connect timeout and keepalive, no statement or query limit. */
  timeouts?: PostgresTimeouts;
  /** What every commit of this pool's transactions waits for (TOKEN_TAP_COMMIT_DURABILITY); default `on`. */
  commitDurability?: CommitDurability;
}

/** The commit durability of each pool made here; any other pool (tests) commits with `on`. */
const durabilityByPool = new WeakMap<pg.Pool, CommitDurability>();

/**
 * The synchronous_commit level this pool's writes ask for, whatever the database's default (often
 * `off` for speed): an acknowledged commit is then in the WAL on disk (`on`), or on the synchronous
 * standbys too (`remote_write`, `remote_apply`), before the spool forgets its copy or a caller
 * gets its answer.
 */
export function commitDurability(pool: pg.Pool): CommitDurability {
  return durabilityByPool.get(pool) ?? 'on';
}

/** pg's error when query_timeout passes: the query was sent and its answer never came. */
const QUERY_TIMEOUT_MESSAGE = 'Query read timeout';

/**
 * A connection whose query timed out on the client still has that query in flight: pg would queue
 * every later query behind it. It is closed here, so the pool discards the client (not queryable)
 * instead of handing it out again, whichever code checked it out.
 */
function discardOnQueryTimeout(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const result = query(...args);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).catch((error: unknown) => {
        if (error instanceof Error && error.message === QUERY_TIMEOUT_MESSAGE)
          (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
      });
    }
    return result;
  };
}

export function createPool(options: PoolOptions): pg.Pool {
  const timeouts = options.timeouts;
  const pool = new pg.Pool({
    connectionString: options.databaseUrl,
    max: options.max ?? 4,
    connectionTimeoutMillis: timeouts?.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    application_name: options.applicationName ?? 'token-tap',
    keepAlive: true,
    keepAliveInitialDelayMillis: timeouts?.keepAliveMs ?? 10_000,
    ...(timeouts
      ? {
          statement_timeout: timeouts.statementTimeoutMs,
          query_timeout: timeouts.queryTimeoutMs,
          idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
        }
      : {}),
  });
  // A checked-out client whose backend dies emits `error` as well as failing its query; the
  // query's rejection is what the caller handles, so the event only needs a listener.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
    discardOnQueryTimeout(client);
  });
  durabilityByPool.set(pool, options.commitDurability ?? 'on');
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

// What counts as Postgres being unavailable is decided in one place (store/errors.ts): the capture
// writer, the API and the audit log agree on it.
export { isPostgresUnavailable } from './errors.js';

export interface TransactionOptions {
  /** Fixed statements (no parameters) run right after BEGIN, in the same round trip: locks, SET LOCAL. */
  opening?: readonly string[];
}

/**
 * Runs `work` in one transaction on a client of its own: COMMIT after it, ROLLBACK if it throws.
 * The commit waits for the pool's commitDurability (SET LOCAL synchronous_commit), sent with BEGIN.
 */
export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    // One simple-protocol query: BEGIN and the settings cost a single round trip.
    await client.query(['BEGIN', `SET LOCAL synchronous_commit = ${commitDurability(pool)}`, ...(options.opening ?? [])].join('; '));
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // A connection that failed or timed out is not trusted again: released with the error, the pool discards it.
    if (isPostgresUnavailable(error)) failure = error as Error;
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release(failure);
  }
}
