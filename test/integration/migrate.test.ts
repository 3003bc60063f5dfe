import { expect } from 'chai';
import pg from 'pg';
import { loadMigrations, migrate, SchemaTooNewError } from '../../src/store/migrate.js';
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
      expect((error as Error).message).to.contain('999999').and.contain('upgrade token-tap');
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
      await migrate(fresh.pool, loadMigrations().filter((migration) => migration.version < 6));
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
      for (const outcome of ['stored', 'idp_error', 'unparseable', 'too_large', 'no_subject', 'linked', 'unmatched', 'unverified', 'quarantined', 'incomplete']) {
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
      const { rows } = await fresh.pool.query("SELECT convalidated FROM pg_constraint WHERE conname = 'capture_events_outcome_check' AND conrelid = 'capture_events'::regclass");
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
      await migrate(fresh.pool, loadMigrations().filter((migration) => migration.version < 11));
      await fresh.pool.query("INSERT INTO quarantined_captures (capture_id, idp, stage, reason, key_id, record) VALUES (gen_random_uuid(), 'acme', 'write', 'r', 'k1', '\\x00')");
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
      await migrate(fresh.pool, loadMigrations().filter((migration) => migration.version < 13));
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
      const migrating = migrate(fresh.pool, loadMigrations(), { lockTimeoutMs: 100, retryForMs: 20_000 });
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
      const { rows } = await fresh.pool.query("SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'grants' AND column_name IN ('chain_began_at', 'revoked_through')");
      expect(rows[0].n).to.equal(2);
    });

    it('gives up after retryForMs with an error naming the lock, never hanging', async () => {
      const held = await holdGrants();
      try {
        const started = Date.now();
        let error: Error | undefined;
        await migrate(fresh.pool, loadMigrations(), { lockTimeoutMs: 100, retryForMs: 1_000 }).catch((caught: Error) => (error = caught));
        expect(error?.message).to.contain('migration 13 (refresh_token_facts) failed').and.to.contain('another session held a lock');
        expect(Date.now() - started).to.be.below(5_000);
      } finally {
        await held.release();
      }
      const { rows } = await fresh.pool.query('SELECT max(version)::int AS v FROM token_tap_migrations');
      expect(rows[0].v).to.equal(11);
    });
  });
});
