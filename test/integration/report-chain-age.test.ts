// The report's chain age (token_tap_report_oldest_chain_age_seconds, the gauge
// TokenTapRefreshTokenPastPolicyAge reads) counts as the policy's max_age counts: from
// chain_began_at, not from the refresh token's first sight, and from captured_at for a grant
// written by a sidecar that does not keep the facts (store/policy-grants.ts dueGrants).
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { registerReportGauges } from '../../src/policy/metrics.js';
import { buildReport } from '../../src/policy/report.js';
import { GrantStore } from '../../src/store/grants.js';
import { migrate } from '../../src/store/migrate.js';
import { dueGrants } from '../../src/store/policy-grants.js';
import { readIdpFigures } from '../../src/store/refresh-token-report.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const DAY = 86_400;

describe('report: the oldest refresh-token chain, as the policy counts max_age', () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase('report_chain_age');
    await migrate(db.pool);
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    await store.recordCaptures([
      syntheticCapture('rotating', 'u1', { tokens: syntheticTokens({ refreshToken: 'rt-1' }) }),
      syntheticCapture('legacy', 'u2', { tokens: syntheticTokens({ refreshToken: 'rt-2' }) }),
    ]);
    const ago = (days: number) => `now() - interval '${days * DAY} seconds'`;
    // Logged in 10 days ago, its token rotated yesterday: the token is a day old, the chain ten.
    await db.pool.query(`UPDATE grants SET captured_at = ${ago(10)}, last_login_at = ${ago(10)}, chain_began_at = ${ago(10)},
      refresh_token_first_seen_at = ${ago(1)}, refresh_token_observed_at = ${ago(1)}, last_refreshed_at = ${ago(1)} WHERE idp = 'rotating'`);
    // Its refresh token written after every login and refresh the facts record (an older sidecar):
    // the facts are not trusted, the chain counts from captured_at (5 days), not chain_began_at (20).
    await db.pool.query(`UPDATE grants SET captured_at = ${ago(5)}, last_login_at = ${ago(6)}, chain_began_at = ${ago(20)},
      refresh_token_first_seen_at = ${ago(20)}, refresh_token_observed_at = ${ago(0.01)}, last_refreshed_at = NULL WHERE idp = 'legacy'`);
  });
  after(async () => db?.drop());

  it('reads the chain age where the token age would say otherwise, and agrees with what dueGrants finds due', async () => {
    const figures = new Map((await readIdpFigures(db.pool)).map((line) => [line.idp, line]));
    expect(figures.get('rotating')!.oldestRefreshTokenAgeSeconds! / DAY).to.be.closeTo(1, 0.01);
    expect(figures.get('rotating')!.oldestChainAgeSeconds! / DAY).to.be.closeTo(10, 0.01);
    expect(figures.get('legacy')!.oldestChainAgeSeconds! / DAY).to.be.closeTo(5, 0.01);
    const due = async (idp: string, days: number) =>
      (await dueGrants(db.pool, idp, { maxAgeMs: days * DAY * 1000, idleMaxMs: undefined, rotateEveryMs: undefined }, 10, 3_600_000)).rows.length;
    expect([await due('rotating', 9.9), await due('rotating', 10.1)]).to.deep.equal([1, 0]);
    expect([await due('legacy', 4.9), await due('legacy', 5.1)]).to.deep.equal([1, 0]);
  });

  it('exports it as token_tap_report_oldest_chain_age_seconds per IdP', async () => {
    const registry = new Registry();
    registerReportGauges(registry, async () => buildReport(await readIdpFigures(db.pool), [], new Map()), {
      cacheMs: 0,
      onError: (error) => {
        throw error;
      },
    });
    const { values } = await registry.getSingleMetric('token_tap_report_oldest_chain_age_seconds')!.get();
    const byIdp = Object.fromEntries(values.map((value) => [value.labels.idp, Math.round(value.value / DAY)]));
    expect(byIdp).to.deep.equal({ legacy: 5, rotating: 10 });
  });
});
