// What migration 000013's columns say after each kind of write (store/grant-upsert.ts): a login, a
// refresh answer that rotates, the spooled copy of that answer replayed by the pump, an answer handing
// the same refresh token back, one with none, the policy's own rotation, and logins with and without
// a new refresh token. The report and the policy read nothing else.
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { migrate } from '../../src/store/migrate.js';
import { withTransaction } from '../../src/store/pool.js';
import { readIdpFigures, readPolicyActions } from '../../src/store/refresh-token-report.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

interface Facts {
  refresh_token_first_seen_at: Date | null;
  chain_began_at: Date | null;
  last_refreshed_at: Date | null;
  last_login_at: Date | null;
  last_used_at: Date | null;
  rotations_seen: number;
  refresh_rotates: boolean | null;
}

describe('refresh-token facts of a grant (migration 000013)', () => {
  let db: TestDatabase;
  let store: GrantStore;
  const t0 = Date.parse('2026-03-01T00:00:00Z');
  const at = (seconds: number) => new Date(t0 + seconds * 1000);

  before(async () => {
    db = await createTestDatabase('refresh_token_facts');
    await migrate(db.pool);
    store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
  });
  after(async () => db?.drop());

  const facts = async (subject: string): Promise<Facts> =>
    (
      await db.pool.query<Facts>(
        'SELECT refresh_token_first_seen_at, chain_began_at, last_refreshed_at, last_login_at, last_used_at, rotations_seen, refresh_rotates FROM grants WHERE idp = $1 AND subject = $2',
        ['acme', subject],
      )
    ).rows[0]!;
  const login = (subject: string, seconds: number, refreshToken: string | undefined) =>
    syntheticCapture('acme', subject, { observedAt: at(seconds), tokens: syntheticTokens({ refreshToken }) });
  const answer = (subject: string, seconds: number, refreshToken: string | undefined, byPolicy = false): Capture => ({
    ...login(subject, seconds, refreshToken),
    obtainedByRefresh: true,
    ...(byPolicy ? { refreshedByPolicy: true } : {}),
  });
  /** As the refresher writes an answer under the row lock (operations/refresh.ts apply). */
  const refreshWith = (capture: Capture) => withTransaction(db.pool, (client) => store.writeObtainedTokens(client, capture));

  it('a login begins the chain; rotations keep it, count, and renew the first-seen time; a replayed answer and the policy change nothing they should not', async () => {
    await store.recordCaptures([login('u1', 0, 'rt-A')]);
    expect(await facts('u1')).to.deep.equal({
      refresh_token_first_seen_at: at(0),
      chain_began_at: at(0),
      last_refreshed_at: null,
      last_login_at: at(0),
      last_used_at: at(0),
      rotations_seen: 0,
      refresh_rotates: null,
    });

    const rotated = answer('u1', 10, 'rt-B');
    await refreshWith(rotated);
    expect(await facts('u1')).to.deep.equal({
      refresh_token_first_seen_at: at(10),
      chain_began_at: at(0),
      last_refreshed_at: at(10),
      last_login_at: at(0),
      last_used_at: at(10),
      rotations_seen: 1,
      refresh_rotates: true,
    });

    // The pump meets the answer's spooled copy (the outbox): the same answer, not a second one handing rt-B back.
    await store.recordCaptures([rotated]);
    expect(await facts('u1')).to.deep.include({ rotations_seen: 1, refresh_rotates: true, refresh_token_first_seen_at: at(10) });

    // The policy's rotation: a refresh, not a use.
    await refreshWith(answer('u1', 20, 'rt-C', true));
    expect(await facts('u1')).to.deep.include({ last_refreshed_at: at(20), last_used_at: at(10), rotations_seen: 2, chain_began_at: at(0) });

    // A login without a refresh token (the IdP sends one only at first consent) is a use, not a new chain.
    await store.recordCaptures([login('u1', 30, undefined)]);
    expect(await facts('u1')).to.deep.include({ chain_began_at: at(0), last_login_at: at(30), last_used_at: at(30), refresh_token_first_seen_at: at(20) });

    // A login with another refresh token begins a new chain.
    await store.recordCaptures([login('u1', 40, 'rt-D')]);
    expect(await facts('u1')).to.deep.include({ chain_began_at: at(40), refresh_token_first_seen_at: at(40), rotations_seen: 2, refresh_rotates: true });
  });

  it('an IdP that hands the same refresh token back, or none: not rotating, and the token keeps its age', async () => {
    await store.recordCaptures([login('u2', 0, 'rt-same')]);
    await refreshWith(answer('u2', 10, 'rt-same'));
    expect(await facts('u2')).to.deep.include({ refresh_token_first_seen_at: at(0), last_refreshed_at: at(10), rotations_seen: 0, refresh_rotates: false });
    await refreshWith(answer('u2', 20, undefined));
    expect(await facts('u2')).to.deep.include({ refresh_token_first_seen_at: at(0), last_refreshed_at: at(20), rotations_seen: 0, refresh_rotates: false });
  });

  it('the report counts them per IdP', async () => {
    const [acme] = await readIdpFigures(db.pool);
    expect(acme).to.deep.include({
      idp: 'acme',
      grants: 2,
      active: 2,
      withRefreshToken: 2,
      rotatesRefreshTokens: true,
      rotationsSeen: 2,
      refreshTokenExpiryKnown: 0,
      lastCaptureAt: at(40),
    });
    expect(acme!.oldestRefreshTokenAgeSeconds).to.be.above(0);
  });

  it('the policy\'s actions count only the runner\'s rows: an API key named "policy" is not the policy', async () => {
    await db.pool.query(
      `INSERT INTO access_events (operation, outcome, api_key_id, caller, idp, subject, detail)
       VALUES ('expire', 'ok', NULL, 'policy', 'spoofed', 'u1', 'the runner'),
              ('expire', 'ok', $1, 'policy', 'spoofed', 'u1', 'a key named policy'),
              ('GetGrant', 'ok', NULL, 'policy', 'spoofed', 'u1', 'not a policy operation')`,
      ['key-named-policy'],
    );
    const counts = (await readPolicyActions(db.pool)).filter((row) => row.idp === 'spoofed');
    expect(counts).to.deep.equal([{ idp: 'spoofed', action: 'expire', outcome: 'ok', count: 1 }]);
  });
});
