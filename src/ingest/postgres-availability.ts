// Whether Postgres can take captures. The sidecar serves ext_proc whatever this says: while
// Postgres is away captures wait in the spool. At start the schema is prepared (migrated); when
// Postgres is not there yet, that is retried in the background with capped, jittered backoff.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { IngestMetrics } from './metrics.js';
import { MigrationAbortedError, migrate, type MigrateOptions, type MigrationRetry, SchemaTooNewError } from '../store/migrate.js';
import { backoffMs } from '../lib/backoff.js';
import { describeError, errorCode, errorName } from '../lib/error-description.js';
import { sleep, waitForWake } from '../lib/abortable-wait.js';

export type StoreCondition = 'preparing' | 'ready' | 'unavailable' | 'schema_too_new';

export interface StoreStateOptions {
  pool: pg.Pool;
  /** Where Postgres is, for messages: the database URL without its password. */
  where?: string;
  logger: Logger;
  metrics: IngestMetrics;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** The schema step; migrate() unless a test says otherwise. */
  prepareSchema?: (pool: pg.Pool, options: MigrateOptions) => Promise<unknown>;
  /** A stop asked for during the start: ends a migration's wait for a lock (prepare() then throws MigrationAbortedError). */
  signal?: AbortSignal;
}

export class StoreState {
  private current: StoreCondition = 'preparing';
  private lastErrorCode: string | undefined;
  private since = Date.now();
  private readonly waiters = new Set<() => void>();
  private readonly stop = new AbortController();
  private retrying: Promise<void> | undefined;
  private schemaReady = false;
  private regained: number | undefined;

  constructor(private readonly options: StoreStateOptions) {
    options.metrics.postgresUp.set(0);
  }

  get condition(): StoreCondition {
    return this.current;
  }

  /**
   * Epoch ms when Postgres last became ready again after a failure (an outage, or not there at
   * start); undefined if it never failed. Refreshes hold off taking over claims that expired meanwhile.
   */
  get regainedAt(): number | undefined {
    return this.regained;
  }

  /** For /readyz: the condition, since when, and the last error's code (never its message). */
  describe(): { condition: StoreCondition; since: string; lastError?: string } {
    return { condition: this.current, since: new Date(this.since).toISOString(), ...(this.lastErrorCode ? { lastError: this.lastErrorCode } : {}) };
  }

  /**
   * Prepares the schema once. A schema newer than this token-tap is fatal (the operator must
   * upgrade); any other failure leaves the store `preparing` and retries in the background.
   */
  async prepare(): Promise<void> {
    try {
      await this.prepareSchema(this.options.signal ? AbortSignal.any([this.options.signal, this.stop.signal]) : this.stop.signal);
      this.set('ready');
    } catch (error) {
      if (error instanceof SchemaTooNewError || error instanceof MigrationAbortedError) throw error;
      this.options.logger.warn(
        { postgres: this.options.where, err: describeError(error) },
        'Postgres is not available at start; serving ext_proc and keeping captures in the spool until it is',
      );
      this.failed(error);
      this.retrying = this.retryPrepare();
    }
  }

  /** Resolves when the schema is ready, or when `signal` aborts. */
  async whenReady(signal: AbortSignal): Promise<void> {
    if (this.schemaReady) return;
    await waitForWake(this.waiters, signal);
  }

  /** A write succeeded. */
  succeeded(): void {
    if (this.current !== 'ready') this.set('ready');
  }

  /** A Postgres operation failed (the caller retries it). */
  failed(error: unknown): void {
    this.options.metrics.postgresErrors.inc();
    this.lastErrorCode = errorCode(error) ?? errorName(error);
    if (this.current === 'ready') this.set('unavailable');
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.retrying;
  }

  private set(condition: StoreCondition): void {
    if (condition !== this.current) {
      const previous = this.current;
      this.current = condition;
      this.since = Date.now();
      if (condition === 'ready' && this.lastErrorCode !== undefined) this.regained = this.since;
      if (condition === 'ready' && previous !== 'preparing') this.options.logger.info('Postgres is available again');
      if (condition === 'ready' && previous === 'preparing') this.options.logger.info('Postgres schema is ready');
    }
    this.options.metrics.postgresUp.set(condition === 'ready' ? 1 : 0);
    if (condition === 'ready') {
      this.schemaReady = true;
      for (const wake of [...this.waiters]) wake();
    }
  }

  private async prepareSchema(signal: AbortSignal): Promise<void> {
    // Each retry of a migration's lock is logged: an operator sees what it waits for and how long.
    const onRetry = (retry: MigrationRetry) =>
      this.options.logger.warn(
        { migration: retry.version, name: retry.name, attempt: retry.attempt, lockTimeoutMs: retry.lockTimeoutMs, retryInMs: retry.pauseMs },
        'a migration could not get its lock within lock_timeout (another session holds its table, see pg_locks); pausing so queries on it go on, then retrying',
      );
    const options: MigrateOptions = { onRetry, signal };
    await (this.options.prepareSchema ? this.options.prepareSchema(this.options.pool, options) : migrate(this.options.pool, undefined, options));
  }

  private async retryPrepare(): Promise<void> {
    const initial = this.options.retryInitialMs ?? 250;
    const max = this.options.retryMaxMs ?? 5_000;
    for (let attempt = 1; !this.stop.signal.aborted; attempt += 1) {
      await sleep(backoffMs(attempt, initial, max), this.stop.signal);
      if (this.stop.signal.aborted) return;
      try {
        await this.prepareSchema(this.stop.signal);
        this.set('ready');
        return;
      } catch (error) {
        if (error instanceof MigrationAbortedError) return;
        this.failed(error);
        if (error instanceof SchemaTooNewError) {
          if (this.current !== 'schema_too_new')
            this.options.logger.error(
              { err: { message: error.message } },
              'cannot write captures: the Postgres schema is newer than this token-tap; upgrade it. Captures stay in the spool.',
            );
          this.set('schema_too_new');
        } else if (attempt === 1 || attempt % 10 === 0) {
          this.options.logger.warn(
            { postgres: this.options.where, err: describeError(error), attempt },
            'Postgres still not available; captures stay in the spool',
          );
        }
      }
    }
  }
}

/** Waits `ms`, or less when `signal` aborts; never rejects. */
