// The pool's timeouts against a Postgres that stops answering (a blackhole proxy in between): a
// query gives up after query_timeout, and its connection is discarded, never handed out again.
import { expect } from 'chai';
import { WRITER_TIMEOUTS } from '../../src/config/postgres.js';
import { migrate } from '../../src/store/migrate.js';
import { createPool, isPostgresUnavailable, withTransaction } from '../../src/store/pool.js';
import { startBlackholeProxy, type BlackholeProxy } from '../support/blackhole-proxy.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('Postgres pool timeouts (blackhole proxy)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let proxy: BlackholeProxy;

  beforeEach(async () => {
    db = await createTestDatabase('pool_timeouts');
    const direct = new URL(db.url);
    proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
  });
  afterEach(async () => {
    await proxy.close();
    await db.drop();
  });

  function proxiedPool() {
    const url = new URL(db.url);
    url.host = `127.0.0.1:${proxy.port}`;
    return createPool({
      databaseUrl: url.toString(),
      max: 1,
      timeouts: { ...WRITER_TIMEOUTS, connectTimeoutMs: 1_000, statementTimeoutMs: 500, queryTimeoutMs: 800 },
    });
  }

  it('gives up on a query after query_timeout and discards its connection, in a transaction or not', async () => {
    const pool = proxiedPool();
    try {
      const pidOf = async () => (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const before = await pidOf();
      proxy.blackhole();
      let started = Date.now();
      const plain = await pool.query('SELECT 1').catch((error: Error) => error);
      const plainMs = Date.now() - started;
      proxy.heal();
      const afterPlain = await pidOf();
      proxy.blackhole();
      started = Date.now();
      const inTransaction = await withTransaction(pool, (client) => client.query('SELECT 1')).catch((error: Error) => error);
      const transactionMs = Date.now() - started;
      proxy.heal();
      started = Date.now();
      const afterTransaction = await pidOf();
      const reconnectMs = Date.now() - started;
      console.log(
        `      query timeout 800 ms: plain query gave up after ${plainMs} ms, in a transaction after ${transactionMs} ms; backends ${before} → ${afterPlain} → ${afterTransaction} (next query ${reconnectMs} ms)`,
      );
      expect((plain as Error).message).to.equal('Query read timeout');
      expect((inTransaction as Error).message).to.equal('Query read timeout');
      expect(isPostgresUnavailable(plain)).to.equal(true);
      expect(plainMs).to.be.below(2_000);
      expect(transactionMs).to.be.below(2_000);
      // A new backend each time: the one cut off mid-query is not used again (the pool holds one).
      expect(new Set([before, afterPlain, afterTransaction]).size).to.equal(3);
      expect(reconnectMs).to.be.below(1_000);
    } finally {
      await pool.end();
    }
  });

  it('sets statement_timeout and idle_in_transaction_session_timeout on its sessions', async () => {
    const pool = createPool({ databaseUrl: db.url, max: 1, timeouts: { ...WRITER_TIMEOUTS, statementTimeoutMs: 1_234, idleInTransactionMs: 5_678 } });
    try {
      const { rows } = await pool.query<{ statement: string; idle: string }>(
        "SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle",
      );
      expect(rows[0]).to.deep.equal({ statement: '1234ms', idle: '5678ms' });
      const slow = await pool.query('SELECT pg_sleep(3)').catch((error: { code?: string }) => error);
      expect((slow as { code?: string }).code).to.equal('57014');
    } finally {
      await pool.end();
    }
  });

  it('lets a migration run past the pool statement and query timeouts, and keeps them for the queries after it', async () => {
    const pool = createPool({ databaseUrl: db.url, max: 1, timeouts: { ...WRITER_TIMEOUTS, statementTimeoutMs: 200, queryTimeoutMs: 300 } });
    try {
      const started = Date.now();
      expect(await migrate(pool, [{ version: 1, name: 'slow', sql: 'SELECT pg_sleep(0.6)' }])).to.deep.equal([1]);
      console.log(`      a 600 ms migration under a 200 ms statement timeout: applied in ${Date.now() - started} ms`);
      const after = await pool.query('SELECT pg_sleep(0.4)').catch((error: { code?: string }) => error);
      expect((after as { code?: string }).code).to.equal('57014');
    } finally {
      await pool.end();
    }
  });
});
