import { expect } from 'chai';
import pg from 'pg';
import { loadMigrations, migrate, MigrationAbortedError, type MigrationRetry, SchemaTooNewError } from '../../src/store/migrate.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('store/migrate', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('migrate');
  });
  after(async () => db?.drop());

  it('applies every numbered migration once, and nothing on a second run', async () => {
    const known = loadMigrations().map((migration) => migration.version);
    expect(known[0]).to.equal(1);
    expect(await migrate(db.pool)).to.deep.equal(known);
    expect(await migrate(db.pool)).to.deep.equal([]);
    const { rows } = await db.pool.query('SELECT version FROM token_tap_migrations ORDER BY version');
    expect(rows.map((row) => row.version)).to.deep.equal(known);
  });

  it('refuses a database migrated by a newer token-tap', async () => {
    await db.pool.query("INSERT INTO token_tap_migrations (version, name) VALUES (999999, 'from_the_future')");
    try {
      await migrate(db.pool);
      expect.fail('should have refused');
    } catch (error) {
      expect(error).to.be.instanceOf(SchemaTooNewError);
      expect((error as Error).message)
        .to.contain('999999')
        .and.contain('upgrade token-tap');
    } finally {
      await db.pool.query('DELETE FROM token_tap_migrations WHERE version = 999999');
    }
  });

  it('rolls back a failing migration and names it', async () => {
    const broken = [...loadMigrations(), { version: 999998, name: 'broken', sql: 'CREATE TABLE broken_one (id int); SELECT no_such_function();' }];
    try {
      await migrate(db.pool, broken);
      expect.fail('should have failed');
    } catch (error) {
      expect((error as Error).message).to.contain('migration 999998 (broken) failed');
    }
    const { rows } = await db.pool.query("SELECT to_regclass('broken_one') AS t");
    expect(rows[0].t).to.equal(null);
  });

  it('000006 adds incomplete to the outcome check and keeps every outcome allowed before it, one added by an earlier migration too', async () => {
    const fresh = await createTestDatabase('migrate_outcome');
    try {
      await migrate(
        fresh.pool,
        loadMigrations().filter((migration) => migration.version < 6),
      );
      // Stands in for an outcome a migration between 000004 and 000006 added to the check.
      await fresh.pool.query(`ALTER TABLE capture_events DROP CONSTRAINT capture_events_outcome_check;
        ALTER TABLE capture_events ADD CONSTRAINT capture_events_outcome_check
        CHECK (outcome IN ('stored', 'idp_error', 'unparseable', 'too_large', 'no_subject', 'linked', 'unmatched', 'unverified', 'quarantined'))`);
      const refusal = async (outcome: string): Promise<string | undefined> => {
        try {
          await fresh.pool.query("INSERT INTO capture_events (capture_id, observed_at, idp, outcome) VALUES (gen_random_uuid(), now(), 'x', $1)", [outcome]);
          return undefined;
        } catch (error) {
          return (error as { code?: string }).code;
        }
      };
      expect(await refusal('incomplete')).to.equal('23514');
      expect(await migrate(fresh.pool)).to.include(6);
      for (const outcome of [
        'stored',
        'idp_error',
        'unparseable',
        'too_large',
        'no_subject',
        'linked',
        'unmatched',
        'unverified',
        'quarantined',
        'incomplete',
      ]) {
        expect(await refusal(outcome), outcome).to.equal(undefined);
      }
      expect(await refusal('bogus')).to.equal('23514');
    } finally {
      await fresh.drop();
    }
  });

  it('widens the outcome check without a validating scan of capture_events (NOT VALID: old rows passed the narrower check), and still checks new rows', async () => {
    const fresh = await createTestDatabase('migrate_not_valid');
    try {
      await migrate(fresh.pool);
      const { rows } = await fresh.pool.query(
        "SELECT convalidated FROM pg_constraint WHERE conname = 'capture_events_outcome_check' AND conrelid = 'capture_events'::regclass",
      );
      expect(rows).to.deep.equal([{ convalidated: false }]);
      let code: string | undefined;
      try {
        await fresh.pool.query("INSERT INTO capture_events (capture_id, observed_at, idp, outcome) VALUES (gen_random_uuid(), now(), 'x', 'bogus')");
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code).to.equal('23514');
    } finally {
      await fresh.drop();
    }
  });

  it('000011 adds a subject fingerprint to quarantined captures; rows quarantined before it keep NULL', async () => {
    const fresh = await createTestDatabase('migrate_quarantine_fp');
    try {
      await migrate(
        fresh.pool,
        loadMigrations().filter((migration) => migration.version < 11),
      );
      await fresh.pool.query(
        "INSERT INTO quarantined_captures (capture_id, idp, stage, reason, key_id, record) VALUES (gen_random_uuid(), 'acme', 'write', 'r', 'k1', '\\x00')",
      );
      expect(await migrate(fresh.pool)).to.include(11);
      const { rows } = await fresh.pool.query('SELECT subject_fp FROM quarantined_captures');
      expect(rows).to.deep.equal([{ subject_fp: null }]);
    } finally {
      await fresh.drop();
    }
  });
  describe('a lock on grants held by another session (000013 alters grants)', () => {
    let fresh: TestDatabase;
    beforeEach(async () => {
      fresh = await createTestDatabase('migrate_lock_wait');
      await migrate(
        fresh.pool,
        loadMigrations().filter((migration) => migration.version < 13),
      );
    });
    afterEach(async () => fresh?.drop());

    /** A session holding ACCESS SHARE on grants (a long read, a stuck transaction) until release(). */
    async function holdGrants(): Promise<{ release(): Promise<void> }> {
      const holder = await fresh.pool.connect();
      await holder.query('BEGIN; LOCK TABLE grants IN ACCESS SHARE MODE');
      return {
        async release() {
          await holder.query('COMMIT');
          holder.release();
        },
      };
    }

    it('waits at most a lock_timeout per attempt, so other queries on grants go on meanwhile, and succeeds once the lock is gone', async () => {
      const held = await holdGrants();
      const started = Date.now();
      const migrating = migrate(fresh.pool, loadMigrations(), { lockTimeoutMs: 100, retryPauseMs: { min: 100, max: 200 }, retryForMs: 20_000 });
      await new Promise((resolve) => setTimeout(resolve, 700));
      // A capture-path read with its own short timeout is not stuck behind the waiting ALTER.
      const reader = new pg.Client({ connectionString: fresh.url });
      await reader.connect();
      try {
        for (let n = 0; n < 3; n += 1) {
          await reader.query("BEGIN; SET LOCAL statement_timeout = '1500ms'");
          await reader.query('SELECT count(*) FROM grants');
          await reader.query('COMMIT');
        }
      } finally {
        await reader.end();
      }
      await held.release();
      expect(await migrating).to.include(13);
      expect(Date.now() - started).to.be.at.least(700);
      const { rows } = await fresh.pool.query(
        "SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'grants' AND column_name IN ('chain_began_at', 'revoked_through')",
      );
      expect(rows[0].n).to.equal(2);
    });

    it('gives up after retryForMs with an error naming the lock, never hanging', async () => {
      const held = await holdGrants();
      try {
        const started = Date.now();
        let error: Error | undefined;
        await migrate(fresh.pool, loadMigrations(), { lockTimeoutMs: 100, retryPauseMs: { min: 100, max: 200 }, retryForMs: 1_000 }).catch(
          (caught: Error) => (error = caught),
        );
        expect(error?.message).to.contain('migration 13 (refresh_token_facts) failed').and.to.contain('another session held a lock');
        expect(Date.now() - started).to.be.below(5_000);
      } finally {
        await held.release();
      }
      const { rows } = await fresh.pool.query('SELECT max(version)::int AS v FROM token_tap_migrations');
      expect(rows[0].v).to.equal(11);
    });

    /** Resolves once the migration's ALTER waits for its lock (an ungranted lock on grants). */
    async function alterWaiting(watcher: pg.Client, timeoutMs = 10_000): Promise<void> {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const { rows } = await watcher.query("SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'grants'::regclass AND NOT granted");
        if (rows[0].n > 0) return;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error('the migration never waited for its lock');
    }

    it("by default waits at most 1 s per attempt: a read with the API's kind of timeout (1.5 s) queued behind it succeeds; each retry is reported", async () => {
      const held = await holdGrants();
      const retries: MigrationRetry[] = [];
      const migrating = migrate(fresh.pool, loadMigrations(), {
        retryPauseMs: { min: 200, max: 200 },
        retryForMs: 60_000,
        onRetry: (retry) => retries.push(retry),
      });
      const [reader, watcher] = [new pg.Client({ connectionString: fresh.url }), new pg.Client({ connectionString: fresh.url })];
      await reader.connect();
      await watcher.connect();
      try {
        for (let n = 0; n < 2; n += 1) {
          // Issued while the ALTER waits: it queues behind it, for the rest of its lock_timeout at most.
          await alterWaiting(watcher);
          const started = Date.now();
          await reader.query("BEGIN; SET LOCAL statement_timeout = '1500ms'");
          await reader.query('SELECT count(*) FROM grants');
          await reader.query('COMMIT');
          expect(Date.now() - started).to.be.below(1_500);
        }
      } finally {
        await reader.end();
        await watcher.end();
        await held.release();
      }
      expect(await migrating).to.include(13);
      expect(retries.length).to.be.at.least(2);
      expect(retries[0]).to.deep.equal({ version: 13, name: 'refresh_token_facts', attempt: 1, lockTimeoutMs: 1_000, pauseMs: 200 });
      expect(retries.map((retry) => retry.attempt)).to.deep.equal(retries.map((_, index) => index + 1));
    });

    it('pauses 5-10 s between attempts by default, and an aborted signal ends the pause at once with nothing applied', async () => {
      const held = await holdGrants();
      try {
        const stop = new AbortController();
        const retries: MigrationRetry[] = [];
        let abortedAt = 0;
        const migrating = migrate(fresh.pool, loadMigrations(), {
          lockTimeoutMs: 100,
          signal: stop.signal,
          onRetry: (retry) => {
            retries.push(retry);
            setTimeout(() => {
              abortedAt = Date.now();
              stop.abort();
            }, 200);
          },
        });
        let error: Error | undefined;
        await migrating.catch((caught: Error) => (error = caught));
        expect(error).to.be.instanceOf(MigrationAbortedError);
        expect(error?.message).to.contain('migration 13 (refresh_token_facts) not applied');
        expect(Date.now() - abortedAt).to.be.below(500);
        expect(retries).to.have.length(1);
        expect(retries[0]?.pauseMs).to.be.within(5_000, 10_000);
      } finally {
        await held.release();
      }
      const { rows } = await fresh.pool.query('SELECT max(version)::int AS v FROM token_tap_migrations');
      expect(rows[0].v).to.equal(11);
      // The advisory lock is free again: a next start migrates.
      expect(await migrate(fresh.pool)).to.include(13);
    });
  });
});
