// Numbered plain-SQL migrations (migrations/000001_name.sql ...), each applied in its own
// transaction under an advisory lock, so several sidecars may start against one database.
// A migration that alters a table waits for an ACCESS EXCLUSIVE lock on it, and while it waits
// every other query on that table queues behind it (captures, the API, the hook, on old pods too).
// So it waits at most a lock_timeout (1 s, below the API's 2 s statement timeout and Okta's 3 s hook
// budget) per attempt, rolls back and pauses 5-10 s (jittered, so traffic flows far longer than it
// is blocked) before it tries again, for at most 10 minutes; then it fails, naming the lock (never
// hangs forever). Each retry is reported (onRetry), and a stop (signal) ends the pause at once.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { sleep } from '../lib/abortable-wait.js';
import { errorCode } from '../lib/error-description.js';
import { asError, TokenTapError } from '../lib/errors.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));
/** The advisory lock migrations run under (exported for tests that hold it). */
export const MIGRATION_LOCK_ID = 0x746f6b65; // "toke"
const MIGRATION_QUERY_TIMEOUT_MS = 30 * 60_000;
const LOCK_NOT_AVAILABLE = '55P03';

export interface MigrateOptions {
  /** The longest one attempt waits for a lock (lock_timeout). Default 1 s. */
  lockTimeoutMs?: number;
  /** The pause between attempts is drawn from [min, max] ms. Default 5-10 s. */
  retryPauseMs?: { min: number; max: number };
  /** The longest a migration keeps retrying a lock it could not get. Default 10 minutes. */
  retryForMs?: number;
  /** Told of each attempt that did not get its lock, before the pause. */
  onRetry?: (retry: MigrationRetry) => void;
  /** Aborting ends a pause between attempts at once (MigrationAbortedError); an attempt in progress ends within its lock_timeout. */
  signal?: AbortSignal;
  random?: () => number;
}

export interface MigrationRetry {
  version: number;
  name: string;
  attempt: number;
  /** What the attempt waited for the lock. */
  lockTimeoutMs: number;
  /** The pause before the next attempt. */
  pauseMs: number;
}

/** A stop came while a migration waited for a lock; nothing of it was applied. */
export class MigrationAbortedError extends TokenTapError {
  override name = 'MigrationAbortedError';
  constructor(message: string) {
    super(message, 'unavailable');
  }
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The database holds migrations this release does not know (a newer release ran against it). */
export class SchemaTooNewError extends TokenTapError {
  override name = 'SchemaTooNewError';
  constructor(message: string) {
    super(message, 'failed_precondition');
  }
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((file) => /^\d{6}_[a-z0-9_]+\.sql$/.test(file))
    .sort()
    .map((file) => ({
      version: Number.parseInt(file.slice(0, 6), 10),
      name: file.slice(7, -4),
      sql: readFileSync(path.join(dir, file), 'utf8'),
    }));
}

/** Applies what is missing; refuses a database migrated by a newer token-tap. Returns versions applied. */
export async function migrate(pool: pg.Pool, migrations = loadMigrations(), options: MigrateOptions = {}): Promise<number[]> {
  const lockTimeoutMs = Math.max(1, Math.floor(options.lockTimeoutMs ?? 1_000));
  const retryForMs = options.retryForMs ?? 10 * 60_000;
  const { min: pauseMin, max: pauseMax } = options.retryPauseMs ?? { min: 5_000, max: 10_000 };
  const random = options.random ?? Math.random;
  const { signal } = options;
  const aborted = (migration: Migration) =>
    new MigrationAbortedError(`migration ${migration.version} (${migration.name}) not applied: stopped while it waited for a lock`);
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    await client.query(`CREATE TABLE IF NOT EXISTS token_tap_migrations (
      version    integer     PRIMARY KEY,
      name       text        NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>('SELECT version FROM token_tap_migrations ORDER BY version');
    const applied = new Set(rows.map((row) => row.version));
    const newestKnown = migrations.at(-1)?.version ?? 0;
    const newestApplied = rows.at(-1)?.version ?? 0;
    if (newestApplied > newestKnown) {
      throw new SchemaTooNewError(`database schema is at migration ${newestApplied}, but this token-tap knows only up to ${newestKnown}: upgrade token-tap`);
    }
    const done: number[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      const giveUpAt = Date.now() + retryForMs;
      // A stop asked for ends only the pause between attempts: each migration is tried at least once,
      // so a stop that came while the advisory lock was held by another start still lets this start
      // finish (and the stop then flush the spool to Postgres) when the lock comes free.
      for (let attempt = 1; ; attempt += 1) {
        await client.query('BEGIN');
        try {
          // A migration may rewrite a big table: the pool's statement and query timeouts (seconds) are
          // for the capture path, not for this. Waiting for a lock is another matter (above).
          await client.query(`SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = ${lockTimeoutMs}`);
          await client.query({ text: migration.sql, query_timeout: MIGRATION_QUERY_TIMEOUT_MS } as pg.QueryConfig);
          await client.query('INSERT INTO token_tap_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
          await client.query('COMMIT');
          break;
        } catch (error) {
          await client.query('ROLLBACK');
          const pause = Math.round(pauseMin + (pauseMax - pauseMin) * random());
          if (errorCode(error) === LOCK_NOT_AVAILABLE && Date.now() + pause < giveUpAt) {
            options.onRetry?.({ version: migration.version, name: migration.name, attempt, lockTimeoutMs, pauseMs: pause });
            await sleep(pause, signal);
            if (signal?.aborted) throw aborted(migration);
            continue;
          }
          const locked =
            errorCode(error) === LOCK_NOT_AVAILABLE
              ? `; another session held a lock on its tables through ${attempt} attempts over ${Math.round(retryForMs / 1000)} s (see pg_locks), try again once it is gone`
              : '';
          throw new Error(`migration ${migration.version} (${migration.name}) failed: ${asError(error).message}${locked}`, { cause: error });
        }
      }
      done.push(migration.version);
    }
    return done;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => undefined);
    client.release();
  }
}
