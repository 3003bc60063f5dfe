// Issue 12: bad TokenVault input fails only its own call, and every decrypting read is audited
// durably before it answers, from the API and from the CLI (`grants show`).
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { AccessEventLog } from '../../src/store/access-events.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli } from '../support/sidecar.js';
import { createApiKey, startVaultSidecar, statusOf, vaultClient, type VaultSidecar } from '../support/token-vault.js';

describe('TokenVault input checks and durable audit (integration)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let vault: VaultSidecar;
  let keys: string;
  const tokens = syntheticTokens({ extras: {} });

  before(async () => {
    db = await createTestDatabase('vault_input');
    keys = generateKeySpec('k1');
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: keys });
    await vault.sidecar.store.recordCaptures([syntheticCapture('acme', 'alice', { tokens })]);
  });
  after(async () => {
    await vault?.close();
    await db?.drop();
  });

  it('an IdP name with NUL is INVALID_ARGUMENT while 200 concurrent calls all succeed, each with its audit row', async () => {
    const key = await createApiKey(db, 'load', ['acme'], ['get']);
    const client = vaultClient(vault.apiPort);
    try {
      await db.pool.query('DELETE FROM access_events');
      const good = Array.from({ length: 200 }, () => client.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.token));
      const bad = client.call('GetGrant', { idp: 'ac\u0000me', subject: 'alice' }, key.token);
      const [badResult, ...goodResults] = await Promise.allSettled([bad, ...good]);
      expect(badResult!.status).to.equal('rejected');
      const error = (badResult as PromiseRejectedResult).reason as grpc.ServiceError;
      expect(error.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(error.details).to.match(/idp contains a control character/);
      const failures = goodResults
        .filter((result) => result.status === 'rejected')
        .map((result) => ((result as PromiseRejectedResult).reason as Error).message);
      expect(failures, 'good calls that failed').to.deep.equal([]);
      for (const result of goodResults) expect((result as PromiseFulfilledResult<any>).value.grant.access_token).to.equal(tokens.accessToken);
      const { rows } = await db.pool.query<{ outcome: string; n: number }>(
        "SELECT outcome, count(*)::int AS n FROM access_events WHERE operation = 'GetGrant' GROUP BY outcome ORDER BY outcome",
      );
      expect(rows).to.deep.equal([
        { outcome: 'invalid_argument', n: 1 },
        { outcome: 'ok', n: 200 },
      ]);
    } finally {
      client.close();
    }
  });

  it('refuses every malformed string field before Postgres: pattern, control characters, length', async () => {
    const key = await createApiKey(db, 'checks', ['*'], ['*']);
    const client = vaultClient(vault.apiPort);
    try {
      const cases: Array<[string, Record<string, unknown>, RegExp]> = [
        ['GetGrant', { idp: 'Not An IdP', subject: 'alice' }, /idp is not an IdP name/],
        ['GetGrant', { idp: 'acme', subject: 'al\nice' }, /subject contains a control character/],
        ['GetGrant', { idp: 'acme', subject: 'a'.repeat(1025) }, /subject is longer than 1024/],
        ['GetGrant', { idp: 'acme', email: `${'a'.repeat(320)}@x` }, /email is longer than 320/],
        ['DeleteSubject', { idp: 'acme', subject: 'bob\u0000' }, /subject contains a control character/],
        ['ListGrants', { idp: 'acme', page_token: Buffer.from(JSON.stringify(['acme', 'a\u0000'])).toString('base64url') }, /page_token/],
      ];
      for (const [method, request, message] of cases) {
        const outcome = await client.call(method as 'GetGrant', request, key.token).then(
          () => undefined,
          (error: grpc.ServiceError) => error,
        );
        expect(outcome?.code, `${method} ${JSON.stringify(request).slice(0, 60)}`).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(outcome!.details).to.match(message);
        // The message names the field, never quotes the value.
        expect(outcome!.details).to.not.contain('aaaa');
      }
      // Bad input is refused even without a valid key: no key lookup ran for it.
      expect(await statusOf(client.call('GetGrant', { idp: 'x\u0000', subject: 'alice' }, 'ttk_nope'))).to.equal(grpc.status.INVALID_ARGUMENT);
    } finally {
      client.close();
    }
  });

  it('the audit writer falls back to one row at a time: a row Postgres refuses fails only its own caller', async () => {
    const events = new AccessEventLog(db.pool);
    await db.pool.query('DELETE FROM access_events');
    const good = Array.from({ length: 200 }, (_, index) => events.record({ operation: 'Probe', outcome: 'ok', caller: 'test', detail: `row ${index}` }));
    // Postgres refuses NUL in text: the whole batch statement fails.
    const bad = events.record({ operation: 'Probe', outcome: 'ok', caller: 'test', detail: 'bad\u0000row' });
    const results = await Promise.allSettled([...good, bad]);
    expect(results.slice(0, 200).every((result) => result.status === 'fulfilled')).to.equal(true);
    expect(results[200]!.status).to.equal('rejected');
    const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM access_events WHERE operation = 'Probe'");
    expect(rows[0]!.n).to.equal(200);
  });

  it('asks for a durable commit of each audit row unless TOKEN_TAP_AUDIT_RELAXED_COMMIT is set', async () => {
    // The statement sets synchronous_commit for its own transaction: seen from inside, via a trigger.
    await db.pool.query(`CREATE TABLE commit_modes (mode text);
      CREATE FUNCTION note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO commit_modes VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;
      CREATE TRIGGER note_commit_mode BEFORE INSERT ON access_events FOR EACH ROW EXECUTE FUNCTION note_commit_mode()`);
    try {
      const durable = new AccessEventLog(db.pool);
      const relaxed = new AccessEventLog(db.pool, { relaxedCommit: true });
      await durable.record({ operation: 'Probe', outcome: 'ok' });
      await relaxed.record({ operation: 'Probe', outcome: 'ok' });
      const { rows } = await db.pool.query<{ mode: string }>('SELECT mode FROM commit_modes');
      expect(rows.map((row) => row.mode)).to.deep.equal(['on', 'off']);
    } finally {
      await db.pool.query(`DROP TRIGGER note_commit_mode ON access_events; DROP FUNCTION note_commit_mode(); DROP TABLE commit_modes`);
    }
  });

  describe('token-tap grants show', () => {
    it('writes an access_events row before printing the decrypted grant', async () => {
      await db.pool.query('DELETE FROM access_events');
      const shown = await runCli(['grants', 'show', '--idp', 'acme', '--subject', 'alice'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys });
      expect(shown.code, shown.stderr).to.equal(0);
      expect(JSON.parse(shown.stdout)).to.include({ access_token: tokens.accessToken });
      const { rows } = await db.pool.query('SELECT operation, outcome, idp, subject, caller FROM access_events');
      expect(rows).to.have.length(1);
      expect(rows[0]).to.include({ operation: 'GetGrant', outcome: 'ok', idp: 'acme', subject: 'alice' });
      expect(rows[0].caller).to.match(/^cli/);
      // A miss is audited too.
      const missing = await runCli(['grants', 'show', '--idp', 'acme', '--subject', 'nobody'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys });
      expect(missing.code).to.equal(1);
      expect((await db.pool.query("SELECT outcome FROM access_events WHERE subject = 'nobody'")).rows).to.deep.equal([{ outcome: 'not_found' }]);
    });

    it('with the audit table unwritable, exits non-zero and prints no token', async () => {
      await db.pool.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused by test'; END $$;
        CREATE TRIGGER refuse_audit BEFORE INSERT ON access_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`);
      try {
        for (const args of [['--subject', 'alice'], ['--pending']]) {
          const shown = await runCli(['grants', 'show', '--idp', 'acme', ...args], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys });
          expect(shown.code, args.join(' ')).to.not.equal(0);
          expect(shown.stdout, 'nothing printed').to.equal('');
          expect(shown.stderr).to.contain('access record could not be written').and.contain('audit refused by test');
          for (const secret of [tokens.accessToken, tokens.refreshToken].filter((token): token is string => Boolean(token)))
            expect(shown.stderr.includes(secret)).to.equal(false);
        }
        // The API withholds its answer the same way.
        const key = await createApiKey(db, 'withheld', ['acme'], ['get']);
        const client = vaultClient(vault.apiPort);
        try {
          const error = await client.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.token).then(
            () => undefined,
            (failure: grpc.ServiceError) => failure,
          );
          expect(error?.code).to.equal(grpc.status.UNAVAILABLE);
        } finally {
          client.close();
        }
      } finally {
        await db.pool.query('DROP TRIGGER refuse_audit ON access_events; DROP FUNCTION refuse_audit()');
      }
    });
  });
});
