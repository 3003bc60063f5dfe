// Alerting series exist at 0 from the start (the rules' increase() sees a first event only on a series
// that was 0 before it): a started sidecar, before any response, exposes the per-IdP outcome series of
// every configured IdP (routes of TOKEN_TAP_ROUTE_IDPS, verified and client IdPs of TOKEN_TAP_IDP_CONFIG),
// the failed-action series of each IdP with a refresh_token_policy, and the unnamed-route count.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { migrate } from '../../src/store/migrate.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('alerting series at 0 from boot (in-process sidecar)', () => {
  let db: TestDatabase;
  let dir: string;
  let running: InProcessSidecar;

  before(async () => {
    db = await createTestDatabase('metrics_at_boot');
    await migrate(db.pool);
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-metrics-boot-'));
    const idps = path.join(dir, 'idps.yaml');
    writeFileSync(
      idps,
      stringify({
        idps: {
          verifying: { issuer: 'https://verifying.invalid', client_id: 'okta' },
          policied: {
            client_id: 'c1',
            token_url: 'https://policied.invalid/token',
            client_secret_env: 'POLICIED_SECRET',
            refresh_token_policy: { max_age: '90d' },
          },
        },
      }),
    );
    running = await startInProcessSidecar(
      {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: generateKeySpec(),
        TOKEN_TAP_FINGERPRINT_KEY: Buffer.alloc(32, 5).toString('base64'),
        TOKEN_TAP_IDP_CONFIG: idps,
        POLICIED_SECRET: 'policied-secret',
        TOKEN_TAP_ROUTE_IDPS: 'httproute/apps/login/token=routed',
        TOKEN_TAP_POLICY_INTERVAL: '1h',
        TOKEN_TAP_API_LISTEN: 'off',
      },
      'silent',
    );
  });
  after(async () => {
    await running?.close();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The series of `name` with exactly these labels among its own, or undefined when it is not exposed. */
  async function series(name: string, labels: Record<string, string>): Promise<number | undefined> {
    const metric = running.sidecar.metrics.registry.getSingleMetric(name);
    if (!metric) return undefined;
    const { values } = await metric.get();
    return values.find((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted))?.value;
  }

  it("exposes each configured IdP's outcome, quarantine and key-fetch series at 0", async () => {
    const missing: string[] = [];
    for (const idp of ['routed', 'verifying', 'policied']) {
      for (const [name, labels] of [
        ['token_tap_captures_total', { outcome: 'too_large' }],
        ['token_tap_captures_total', { outcome: 'unverified' }],
        ['token_tap_captures_quarantined_total', { reason: 'failed' }],
        ['token_tap_jwks_fetches_total', { result: 'failed' }],
      ] as const) {
        const value = await series(name, { idp, ...labels });
        if (value !== 0)
          missing.push(
            `${name}{idp="${idp}",${Object.entries(labels)
              .map(([key, wanted]) => `${key}="${wanted}"`)
              .join(',')}} = ${value}`,
          );
      }
    }
    expect(missing).to.deep.equal([]);
  });

  it('exposes the failed-action series of each IdP with a policy at 0, and none for IdPs without one', async () => {
    for (const action of ['rotate', 'expire']) {
      for (const outcome of ['unavailable', 'internal', 'failed_precondition']) {
        expect(await series('token_tap_policy_actions_total', { idp: 'policied', action, outcome }), `${action} ${outcome}`).to.equal(0);
      }
    }
    expect(await series('token_tap_policy_actions_total', { idp: 'verifying' })).to.equal(undefined);
  });

  it('exposes the unnamed-route count at 0', async () => {
    expect(await series('token_tap_unnamed_route_responses_total', {})).to.equal(0);
  });
});
