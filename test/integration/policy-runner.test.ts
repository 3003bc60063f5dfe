// The policy runner on real Postgres with the real revoker and audit log (no IdP client: an expiry
// erases in the vault only): one run at a time across processes (the advisory lock), bounded per IdP
// and per run with the longest due first, judged again under the row lock, and audited.
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { expect } from 'chai';
import type pg from 'pg';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { IdpClient } from '../../src/idp/client.js';
import { GrantRevoker } from '../../src/operations/revoke.js';
import { VaultError } from '../../src/store/errors.js';
import { PolicyRunner, type PolicyRunnerOptions } from '../../src/policy/runner.js';
import { AccessEventLog } from '../../src/store/access-events.js';
import { GrantStore } from '../../src/store/grants.js';
import { migrate } from '../../src/store/migrate.js';
import { POLICY_LOCK_ID } from '../../src/store/policy-grants.js';
import { withTransaction } from '../../src/store/pool.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('refresh-token policy runner (Postgres)', () => {
  let db: TestDatabase;
  let store: GrantStore;
  const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000);

  before(async () => {
    db = await createTestDatabase('policy_runner');
    await migrate(db.pool);
    store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
  });
  after(async () => db?.drop());

  function runner(overrides: Partial<PolicyRunnerOptions> = {}): PolicyRunner {
    return new PolicyRunner({
      pool: db.pool,
      policies: new Map([
        ['a', { maxAgeMs: 60_000 }],
        ['b', { idleMaxMs: 60_000 }],
      ]),
      refresher: { refresh: async () => ({ refreshedByThisCall: true }) },
      revoker: new GrantRevoker({ pool: db.pool, store, clients: new Map() }),
      events: new AccessEventLog(db.pool),
      intervalMs: 1_000,
      maxPerRun: 4,
      maxPerIdp: 3,
      ...overrides,
    });
  }

  it('acts on at most maxPerIdp grants per IdP and maxPerRun in all, the longest due first, and audits each', async () => {
    // Logins 10 to 14 minutes ago at each IdP: all past a one-minute max_age / idle_max.
    await store.recordCaptures([0, 1, 2, 3, 4].flatMap((n) => ['a', 'b'].map((idp) => syntheticCapture(idp, `u${n}`, { observedAt: minutesAgo(10 + n) }))));
    const first = await runner().runOnce();
    expect(first.ran).to.equal(true);
    expect(first.actions.map(({ idp, subject, action, outcome }) => `${idp}/${subject} ${action} ${outcome}`)).to.deep.equal([
      'a/u4 expire ok',
      'a/u3 expire ok',
      'a/u2 expire ok',
      'b/u4 expire ok',
    ]);
    const { rows } = await db.pool.query("SELECT idp, subject, operation, outcome, detail FROM access_events WHERE caller = 'policy' ORDER BY id");
    expect(rows.map((row) => `${row.idp}/${row.subject} ${row.operation} ${row.outcome}`)).to.deep.equal([
      'a/u4 expire ok',
      'a/u3 expire ok',
      'a/u2 expire ok',
      'b/u4 expire ok',
    ]);
    expect(rows[0].detail).to.include('max_age').and.to.include('no revocation_url');
    expect(rows[3].detail).to.include('idle_max');
    const second = await runner().runOnce();
    expect(second.actions.map(({ idp, subject }) => `${idp}/${subject}`)).to.deep.equal(['a/u1', 'a/u0', 'b/u3', 'b/u2']);
    const { rows: left } = await db.pool.query("SELECT idp, subject FROM grants WHERE status = 'active' ORDER BY idp, subject");
    expect(left.map((row) => `${row.idp}/${row.subject}`)).to.deep.equal(['b/u0', 'b/u1']);
  });

  it('does nothing while another process holds the policy lock', async () => {
    const holder: pg.PoolClient = await db.pool.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [POLICY_LOCK_ID]);
      expect(await runner().runOnce()).to.deep.equal({ ran: false, actions: [] });
      await holder.query('SELECT pg_advisory_unlock($1)', [POLICY_LOCK_ID]);
    } finally {
      holder.release();
    }
    expect((await runner().runOnce()).actions.length).to.equal(2);
  });

  it('a login between the read and the row lock saves the grant: skipped, audited as such', async () => {
    await store.recordCaptures([syntheticCapture('a', 'late', { observedAt: minutesAgo(10) })]);
    const revoker = new GrantRevoker({ pool: db.pool, store, clients: new Map() });
    const loginFirst: PolicyRunnerOptions['revoker'] = {
      async revoke(idp, subject, options) {
        await store.recordCaptures([syntheticCapture(idp, subject, { observedAt: new Date() })]);
        return revoker.revoke(idp, subject, options);
      },
    };
    const { actions } = await runner({ revoker: loginFirst }).runOnce();
    expect(actions).to.deep.equal([{ idp: 'a', subject: 'late', action: 'expire', outcome: 'skipped' }]);
    expect((await store.findGrant('a', 'late'))!.status).to.equal('active');
  });
  it('a login observed before the expiry committed but written after it makes the grant active again, with its refresh token', async () => {
    await store.recordCaptures([syntheticCapture('a', 'spooled', { observedAt: minutesAgo(10) })]);
    const revoker = new GrantRevoker({ pool: db.pool, store, clients: new Map() });
    const login = syntheticCapture('a', 'spooled', { observedAt: new Date(), tokens: syntheticTokens({ refreshToken: 'rt-after-the-expiry' }) });
    const loginLate: PolicyRunnerOptions['revoker'] = {
      async revoke(idp, subject, options) {
        // Observed 50 ms before the expiry commits (a spool or pump delay, the IdP's revocation call under the lock), written after it.
        await new Promise((resolve) => setTimeout(resolve, 50));
        const result = await revoker.revoke(idp, subject, options);
        await store.recordCaptures([login]);
        return result;
      },
    };
    const { actions } = await runner({ revoker: loginLate }).runOnce();
    expect(actions).to.deep.equal([{ idp: 'a', subject: 'spooled', action: 'expire', outcome: 'ok' }]);
    const grant = (await store.findGrant('a', 'spooled'))!;
    expect(grant.status).to.equal('active');
    expect(grant.refreshToken).to.equal('rt-after-the-expiry');
  });

  it('an operator revocation still cuts off a login captured before it committed', async () => {
    await store.recordCaptures([syntheticCapture('a', 'operator', { observedAt: minutesAgo(1) })]);
    const login = syntheticCapture('a', 'operator', { observedAt: new Date() });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await new GrantRevoker({ pool: db.pool, store, clients: new Map() }).revoke('a', 'operator');
    await store.recordCaptures([login]);
    const grant = (await store.findGrant('a', 'operator'))!;
    expect(grant.status).to.equal('revoked');
    expect(grant.refreshToken).to.equal(null);
  });
  it("an operator revocation after the policy's expiry cuts off a login captured before it, as on an active grant", async () => {
    await store.recordCaptures([syntheticCapture('a', 'expired-then-revoked', { observedAt: minutesAgo(10) })]);
    expect((await runner().runOnce()).actions).to.deep.include({ idp: 'a', subject: 'expired-then-revoked', action: 'expire', outcome: 'ok' });
    // Observed after the expiry, before the operator's revocation; written after both (a spool that waited).
    const login = syntheticCapture('a', 'expired-then-revoked', { observedAt: new Date() });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await new GrantRevoker({ pool: db.pool, store, clients: new Map() }).revoke('a', 'expired-then-revoked');
    await store.recordCaptures([login]);
    const grant = (await store.findGrant('a', 'expired-then-revoked'))!;
    expect(grant.status).to.equal('revoked');
    expect(grant.refreshToken).to.equal(null);
  });
  it("an expiry's audit row is written in its transaction: refused, the grant stays as it was and the run goes on with the others", async () => {
    await store.recordCaptures([
      syntheticCapture('a', 'audit-refused', { observedAt: minutesAgo(30) }),
      syntheticCapture('a', 'audit-kept', { observedAt: minutesAgo(20) }),
    ]);
    await db.pool.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.subject = 'audit-refused' AND NEW.outcome <> 'internal' THEN RAISE EXCEPTION 'audit row refused'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_audit BEFORE INSERT ON access_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`);
    try {
      const { actions } = await runner().runOnce();
      expect(actions).to.deep.equal([
        { idp: 'a', subject: 'audit-refused', action: 'expire', outcome: 'internal' },
        { idp: 'a', subject: 'audit-kept', action: 'expire', outcome: 'ok' },
      ]);
    } finally {
      await db.pool.query('DROP TRIGGER refuse_audit ON access_events; DROP FUNCTION refuse_audit()');
    }
    const refused = (await store.findGrant('a', 'audit-refused'))!;
    expect(refused.status).to.equal('active');
    expect(refused.refreshToken).to.be.a('string');
    expect((await store.findGrant('a', 'audit-kept'))!.status).to.equal('revoked');
    const { rows } = await db.pool.query("SELECT subject, outcome, detail FROM access_events WHERE caller = 'policy' AND subject LIKE 'audit-%' ORDER BY id");
    expect(rows.map((row) => `${row.subject} ${row.outcome}`)).to.deep.equal(['audit-refused internal', 'audit-kept ok']);
    expect(rows[0].detail).to.include('nothing was changed in the vault');
  });

  it('a rotation writes its intent before the refresh, and its outcome after; no intent row, no refresh', async () => {
    const refreshed: string[] = [];
    const rotating = runner({
      policies: new Map([['c', { rotateEveryMs: 60_000 }]]),
      refresher: { refresh: async (_idp, subject) => (refreshed.push(subject), { refreshedByThisCall: true }) },
    });
    await store.recordCaptures([
      syntheticCapture('c', 'rot', { observedAt: minutesAgo(5) }),
      syntheticCapture('c', 'audit-refused', { observedAt: minutesAgo(4) }),
    ]);
    await db.pool.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.subject = 'audit-refused' AND NEW.outcome <> 'internal' THEN RAISE EXCEPTION 'audit row refused'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_audit BEFORE INSERT ON access_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`);
    try {
      const { actions } = await rotating.runOnce();
      expect(actions.map((action) => `${action.subject} ${action.outcome}`)).to.deep.equal(['rot ok', 'audit-refused internal']);
    } finally {
      await db.pool.query('DROP TRIGGER refuse_audit ON access_events; DROP FUNCTION refuse_audit()');
    }
    expect(refreshed).to.deep.equal(['rot']);
    const { rows } = await db.pool.query("SELECT subject, outcome FROM access_events WHERE caller = 'policy' AND idp = 'c' ORDER BY id");
    expect(rows.map((row) => `${row.subject} ${row.outcome}`)).to.deep.equal(['rot started', 'rot ok', 'audit-refused internal']);
  });

  describe('a grant stored before migration 000013 (its facts NULL)', () => {
    // As the row was before the upgrade: 000013's columns as ADD COLUMN left them.
    const asBeforeTheUpgrade = (idp: string, subject: string) =>
      db.pool.query(
        `UPDATE grants SET refresh_token_fp = NULL, refresh_token_first_seen_at = NULL, chain_began_at = NULL, last_refreshed_at = NULL,
                           last_login_at = NULL, last_used_at = NULL, rotations_seen = 0, refresh_rotates = NULL WHERE idp = $1 AND subject = $2`,
        [idp, subject],
      );
    // Time passing for one row: every time it holds moves back.
    const minutesPass = (idp: string, subject: string, minutes: number) =>
      db.pool.query(
        `UPDATE grants SET captured_at = captured_at - $3 * interval '1 minute', refresh_token_observed_at = refresh_token_observed_at - $3 * interval '1 minute',
                           refresh_token_first_seen_at = refresh_token_first_seen_at - $3 * interval '1 minute', chain_began_at = chain_began_at - $3 * interval '1 minute',
                           last_refreshed_at = last_refreshed_at - $3 * interval '1 minute', last_login_at = last_login_at - $3 * interval '1 minute',
                           last_used_at = last_used_at - $3 * interval '1 minute' WHERE idp = $1 AND subject = $2`,
        [idp, subject, minutes],
      );
    /** The policy's rotations, each written as the refresher writes its answer, 10 minutes after the one before. */
    function rotatingFrom(minutesAgoFirst: number): PolicyRunnerOptions['refresher'] {
      let next = minutesAgoFirst;
      return {
        async refresh(idp, subject) {
          const answer = {
            ...syntheticCapture(idp, subject, { observedAt: minutesAgo(next), tokens: syntheticTokens({ refreshToken: `rt-${next}` }) }),
            obtainedByRefresh: true,
            refreshedByPolicy: true as const,
          };
          next -= 10;
          await withTransaction(db.pool, (client) => store.writeObtainedTokens(client, answer));
          return { refreshedByThisCall: true };
        },
      };
    }

    for (const [rule, policy] of [
      ['max_age', { maxAgeMs: 120 * 60_000, rotateEveryMs: 10 * 60_000 }],
      ['idle_max', { idleMaxMs: 120 * 60_000, rotateEveryMs: 10 * 60_000 }],
    ] as const) {
      it(`rotate_every does not reset ${rule}: it still counts from the grant's time before the upgrade`, async () => {
        const idp = `legacy-${rule}`;
        await store.recordCaptures([syntheticCapture(idp, 'old', { observedAt: minutesAgo(100) })]);
        await asBeforeTheUpgrade(idp, 'old');
        const legacy = runner({ policies: new Map([[idp, policy]]), refresher: rotatingFrom(90) });
        for (let rotation = 0; rotation < 5; rotation++) {
          expect((await legacy.runOnce()).actions).to.deep.equal([{ idp, subject: 'old', action: 'rotate', outcome: 'ok' }]);
        }
        // Rotated at 90 to 50 minutes ago. 30 minutes later the login is 130 minutes old, past 120.
        await minutesPass(idp, 'old', 30);
        expect((await legacy.runOnce()).actions).to.deep.equal([{ idp, subject: 'old', action: 'expire', outcome: 'ok' }]);
        const { rows } = await db.pool.query("SELECT detail FROM access_events WHERE caller = 'policy' AND idp = $1 AND operation = 'expire'", [idp]);
        expect(rows[0].detail).to.match(new RegExp(`^${rule}:`));
        expect((await store.findGrant(idp, 'old'))!.status).to.equal('revoked');
      });
    }
  });

  it('grants whose action keeps failing do not starve the others: they are backed off, and the next run reaches the grant behind them', async () => {
    await store.recordCaptures([
      ...[0, 1, 2].map((n) => syntheticCapture('starve', `bad-${n}`, { observedAt: minutesAgo(30 - n) })),
      syntheticCapture('starve', 'healthy', { observedAt: minutesAgo(10) }),
    ]);
    const refreshed: string[] = [];
    const failing = runner({
      policies: new Map([['starve', { rotateEveryMs: 60_000 }]]),
      maxPerIdp: 3,
      refresher: {
        async refresh(_idp, subject) {
          if (subject.startsWith('bad-')) throw new VaultError('the IdP refused the refresh (invalid_client)', 'failed_precondition');
          refreshed.push(subject);
          return { refreshedByThisCall: true };
        },
      },
    });
    const first = await failing.runOnce();
    expect(first.actions.map((action) => `${action.subject} ${action.outcome}`)).to.deep.equal([
      'bad-0 failed_precondition',
      'bad-1 failed_precondition',
      'bad-2 failed_precondition',
    ]);
    const second = await failing.runOnce();
    expect(second.actions.map((action) => `${action.subject} ${action.outcome}`)).to.deep.equal(['healthy ok']);
    expect(refreshed).to.deep.equal(['healthy']);
    // Past the back-off (four intervals, at least an hour) they are tried again, after the grants that never failed
    // (this refresher writes nothing, so 'healthy' is still due).
    await db.pool.query("UPDATE grants SET policy_failed_at = policy_failed_at - interval '61 minutes' WHERE idp = 'starve'");
    expect((await failing.runOnce()).actions.map((action) => action.subject)).to.deep.equal(['healthy', 'bad-0', 'bad-1']);
  });

  describe('an IdP whose revocation endpoint answers 500', () => {
    let server: Server;
    let revocations = 0;
    before(async () => {
      server = createServer((request, response) => {
        revocations++;
        request.resume();
        response.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"server_error"}');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    });
    after(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('an expiry still erases the grant in the vault and marks it revoked: outcome revoke_failed, audited and counted', async () => {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const client = new IdpClient(
        {
          idp: 'r500',
          tokenUrl: new URL(`${base}/token`),
          revocationUrl: new URL(`${base}/revoke`),
          clientId: 'okta',
          authMethod: 'client_secret_basic',
          timeoutMs: 2_000,
        },
        'secret',
      );
      await store.recordCaptures([syntheticCapture('r500', 'old', { observedAt: minutesAgo(10) })]);
      const counted: string[] = [];
      const { actions } = await runner({
        policies: new Map([['r500', { maxAgeMs: 60_000 }]]),
        revoker: new GrantRevoker({ pool: db.pool, store, clients: new Map([['r500', client]]) }),
        onAction: (idp, action, outcome) => counted.push(`${idp} ${action} ${outcome}`),
      }).runOnce();
      expect(actions).to.deep.equal([{ idp: 'r500', subject: 'old', action: 'expire', outcome: 'revoke_failed' }]);
      expect(counted).to.deep.equal(['r500 expire revoke_failed']);
      expect(revocations).to.be.above(0);
      const grant = (await store.findGrant('r500', 'old'))!;
      expect(grant.status).to.equal('revoked');
      expect(grant.refreshToken).to.equal(null);
      expect(grant.accessToken).to.equal(null);
      const { rows } = await db.pool.query("SELECT outcome, detail FROM access_events WHERE caller = 'policy' AND idp = 'r500'");
      expect(rows).to.have.length(1);
      expect(rows[0].outcome).to.equal('revoke_failed');
      expect(rows[0].detail).to.match(/^max_age: revocation at the IdP failed .*erased anyway/);
    });
  });
});
