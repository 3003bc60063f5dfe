// The audit row of a TokenVault call says what the caller got, also when a deadline passes while
// the call runs: the API's own 4.5 s deadline, or the caller's. A call that changes something
// (DeleteSubject, RefreshGrant, RevokeGrant) and finishes after its caller gave up says what it did,
// and that the caller gave up. Postgres is made slow for real (the test holds table locks the
// call's queries wait on); the calls are real gRPC calls.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import type pg from 'pg';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { loadTokenVault } from '../../src/api/protocol.js';
import { syntheticCapture } from '../support/captures.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, startVaultSidecar, statusOf, vaultClient, type VaultSidecar } from '../support/token-vault.js';

/** The access_events outcome that names a gRPC status a caller saw. */
const OUTCOME_OF_STATUS: Partial<Record<grpc.status, string>> = {
  [grpc.status.OK]: 'ok',
  [grpc.status.UNAVAILABLE]: 'unavailable',
  [grpc.status.CANCELLED]: 'cancelled',
  [grpc.status.DEADLINE_EXCEEDED]: 'cancelled',
};

describe('TokenVault audit rows carry the outcome the caller saw, across deadlines (integration)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let vault: VaultSidecar;
  let key: { id: string; token: string };

  before(async () => {
    db = await createTestDatabase('vault_deadline');
    // Statements may wait longer than the API's deadline, so the deadline is what ends a slow call.
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_API_PG_STATEMENT_TIMEOUT_MS: '15000' });
    await vault.sidecar.store.recordCaptures([syntheticCapture('acme', 'alice')]);
    key = await createApiKey(db, 'reader', ['acme'], ['get']);
  });
  after(async () => {
    await vault?.close();
    await db?.drop();
  });

  /** Holds `lock` on `table` in a transaction of its own until release() (its queries wait meanwhile). */
  async function holdLock(table: string, mode: string): Promise<{ release(): Promise<void> }> {
    const client: pg.PoolClient = await db.pool.connect();
    await client.query('BEGIN');
    await client.query(`LOCK TABLE ${table} IN ${mode} MODE`);
    return {
      async release() {
        await client.query('ROLLBACK');
        client.release();
      },
    };
  }

  /** GetGrant over real gRPC with the caller's own deadline; the status it ended with and when. */
  async function getGrant(deadlineMs: number): Promise<{ code: grpc.status; ms: number }> {
    const { Client } = loadTokenVault();
    const client = new Client(`127.0.0.1:${vault.apiPort}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...args: any[]) => any>;
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${key.token}`);
    const started = Date.now();
    try {
      const code = await new Promise<grpc.status>((resolve) =>
        client.GetGrant!.call(client, { idp: 'acme', subject: 'alice' }, metadata, { deadline: Date.now() + deadlineMs }, (error: grpc.ServiceError | null) =>
          resolve(error ? error.code : grpc.status.OK),
        ),
      );
      return { code, ms: Date.now() - started };
    } finally {
      client.close();
    }
  }

  /** The audit row of the one GetGrant since the table was emptied, once it is written. */
  const auditRow = () =>
    waitFor(
      'the access_events row',
      async () =>
        (
          await db.pool.query<{ outcome: string; detail: string | null }>(
            "SELECT outcome, detail FROM access_events WHERE operation = 'GetGrant' AND api_key_id = $1",
            [key.id],
          )
        ).rows[0],
      20_000,
    );

  beforeEach(async () => {
    await db.pool.query('DELETE FROM access_events');
  });

  it('the work ends just before the API deadline and its audit row is committed after it: the row and the answer agree', async () => {
    // The key check waits 3 s (under the 4.5 s deadline) and succeeds; the audit row then waits until 6 s.
    const keys = await holdLock('api_keys', 'ACCESS EXCLUSIVE');
    const audit = await holdLock('access_events', 'EXCLUSIVE');
    const call = getGrant(15_000);
    setTimeout(() => void keys.release(), 3_000);
    setTimeout(() => void audit.release(), 6_000);
    const { code, ms } = await call;
    const row = await auditRow();
    console.log(`      work done at 3 s, audit row committed at 6 s: the caller got ${grpc.status[code]} after ${ms} ms; the row says ${row.outcome}`);
    expect(row.outcome).to.equal(OUTCOME_OF_STATUS[code]);
    expect(code, 'the work succeeded before the deadline').to.equal(grpc.status.OK);
  });

  it('the work runs past the API deadline: UNAVAILABLE, and the row says so', async () => {
    const keys = await holdLock('api_keys', 'ACCESS EXCLUSIVE');
    const call = getGrant(15_000);
    setTimeout(() => void keys.release(), 6_000);
    const { code, ms } = await call;
    const row = await auditRow();
    console.log(`      work done at 6 s: the caller got ${grpc.status[code]} after ${ms} ms; the row says ${row.outcome} (${row.detail})`);
    expect(code).to.equal(grpc.status.UNAVAILABLE);
    expect(ms).to.be.below(5_000);
    expect(row.outcome).to.equal(OUTCOME_OF_STATUS[code]);
  });

  it("the caller's own deadline passes while the work runs: the row says the call was cancelled, not ok", async () => {
    const keys = await holdLock('api_keys', 'ACCESS EXCLUSIVE');
    const call = getGrant(1_500);
    setTimeout(() => void keys.release(), 3_000);
    const { code, ms } = await call;
    const row = await auditRow();
    console.log(
      `      caller deadline 1.5 s, work done at 3 s: the caller got ${grpc.status[code]} after ${ms} ms; the row says ${row.outcome} (${row.detail})`,
    );
    expect(code).to.equal(grpc.status.DEADLINE_EXCEEDED);
    expect(row.outcome).to.equal(OUTCOME_OF_STATUS[code]);
    expect(row.detail).to.contain('the work went on: ok');
  });

  it("DeleteSubject whose caller's deadline passes before the erasure is done: the row says what was deleted, and that the caller gave up", async () => {
    await vault.sidecar.store.recordCaptures([syntheticCapture('acme', 'bob')]);
    const deleter = await createApiKey(db, 'deleter', ['acme'], ['delete']);
    // A capture batch in flight holds ROW SHARE on tombstones: the erasure waits for it until 2.5 s
    // (under its 5 s lock timeout), the caller only 1 s.
    const batch = await holdLock('tombstones', 'ROW SHARE');
    const client = vaultClient(vault.apiPort);
    try {
      const call = statusOf(client.call('DeleteSubject', { idp: 'acme', subject: 'bob' }, deleter.token, { deadlineMs: 1_000 }));
      setTimeout(() => void batch.release(), 2_500);
      expect(await call).to.equal(grpc.status.DEADLINE_EXCEEDED);
    } finally {
      client.close();
    }
    const row = await waitFor(
      'the access_events row',
      async () =>
        (
          await db.pool.query<{ outcome: string; detail: string }>(
            "SELECT outcome, detail FROM access_events WHERE operation = 'DeleteSubject' AND api_key_id = $1",
            [deleter.id],
          )
        ).rows[0],
      20_000,
    );
    console.log(`      caller deadline 1 s, erasure done at 2.5 s: the row says ${row.outcome} (${row.detail})`);
    expect(row.outcome, 'the deletion happened').to.equal('ok');
    expect(row.detail).to.contain('deleted 1 grants (acme/bob)').and.contain('the caller gave up');
    expect(await vault.sidecar.store.findGrant('acme', 'bob')).to.equal(undefined);
  });
});
