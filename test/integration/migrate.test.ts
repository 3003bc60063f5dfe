import { expect } from 'chai';
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
});
