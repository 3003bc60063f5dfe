// An upstream IdP (a real OpenID Provider behind the real Envoy) issues an id_token whose `sub` is
// about 3 KB, then one whose `email` is: past the btree row limit of the indexes that hold them
// (about 2,700 bytes). Postgres refuses such a row: before the bounds of capture/bounds.ts and the
// quarantine the writer retried that batch for ever (no later login of any IdP reached Postgres,
// before or after a restart), and with the quarantine alone it is set aside where a retry can never
// write it. Now each is recorded too_large before the spool, and the logins of two other IdPs behind
// the same Envoy and sidecar are in Postgres within 10 s, before and after a restart.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { FIELD_BOUNDS, formatBytes } from '../../src/capture/bounds.js';
import { tokenRoutePath } from '../../src/contract.js';
import type { ProcessingMode } from '../../src/envoyconfig/render.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { loginAsOkta } from '../support/okta-client.js';
import { waitFor } from '../support/ports.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

/** Random, so Postgres cannot compress it under the limit. */
const bigSubject = randomBytes(2300).toString('base64url');
const bigEmail = `${randomBytes(2300).toString('base64url')}@hostile.example`;
const LANDS_WITHIN_MS = 10_000;

const accounts = (prefix: string) => Object.fromEntries([1, 2, 3, 4].map((n) => [`${prefix}${n}`, { email: `${prefix}${n}@example.test` }]));

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`an IdP whose sub or email is past the index row limit, through Envoy (${mode} mode)`, function () {
    this.timeout(120_000);
    let stack: Stack;
    /** The two other IdPs, real OpenID Providers of their own, behind their own Envoy routes. */
    const others: Record<string, TestIdp> = {};
    const tokenUrlOf = (idp: string) => `${stack.origin}${tokenRoutePath(idp)}`;

    before(async () => {
      others.alpha = await startTestIdp({ accounts: accounts('a') });
      others.beta = await startTestIdp({ accounts: accounts('b') });
      stack = await startStack(mode, {
        label: `poison_${mode}`,
        idpOptions: { accounts: { [bigSubject]: { email: 'big-sub@hostile.example' }, mallory: { email: bigEmail } } },
        // Responses with no token are summarised per IdP, outcome and interval; the hostile logins
        // are a second or more apart, so with the shortest interval each keeps an event of its own.
        sidecarEnv: { TOKEN_TAP_REFUSAL_SUMMARY_MS: '100' },
        moreIdps: Object.entries(others).map(([name, idp]) => ({ name, tokenUrl: new URL(idp.tokenUrl) })),
      });
    });
    after(async () => {
      await stack?.stop();
      for (const idp of Object.values(others)) await idp.close();
    });

    /** Logs in at the hostile IdP, then at alpha and beta, whose grants must be in Postgres in time. */
    async function poisonThenOthers(hostileAccount: string, n: number): Promise<void> {
      const hostile = await loginAsOkta(stack.idp, stack.tokenUrl, { loginHint: hostileAccount });
      expect(hostile.claims.sub).to.equal(hostileAccount);
      const logins: Array<[string, string]> = [
        ['alpha', `a${n}`],
        ['beta', `b${n}`],
      ];
      for (const [idp, subject] of logins) await loginAsOkta(others[idp]!, tokenUrlOf(idp), { loginHint: subject });
      const started = Date.now();
      for (const [idp, subject] of logins) {
        await waitFor(
          `${idp}/${subject} in Postgres after the ${hostileAccount === 'mallory' ? '3 KB email' : '3 KB sub'}`,
          async () => ((await stack.db.pool.query('SELECT 1 FROM grants WHERE idp = $1 AND subject = $2', [idp, subject])).rowCount ? true : undefined),
          Math.max(0, LANDS_WITHIN_MS - (Date.now() - started)),
        ).catch((error: Error) => {
          const warnings = stack
            .sidecar!.logs()
            .split('\n')
            .filter((line) => /"level":(40|50)/.test(line))
            .slice(-3);
          throw new Error(`${error.message}\n${warnings.map((line) => line.slice(0, 400)).join('\n')}`);
        });
      }
    }

    it("records each as too_large, changes no grant, and the other IdPs' logins land within 10 s, before and after a restart", async () => {
      await poisonThenOthers(bigSubject, 1);
      await poisonThenOthers('mallory', 2);
      const firstLogs = stack.sidecar!.logs();
      await stack.restartSidecarSeenByEnvoy();
      await poisonThenOthers(bigSubject, 3);
      await poisonThenOthers('mallory', 4);

      const events = await waitFor('the four hostile events', async () => {
        const { rows } = await stack.db.pool.query('SELECT outcome, detail, subject FROM capture_events WHERE idp = $1 ORDER BY id', [IDP_NAME]);
        return rows.length >= 4 ? rows : undefined;
      });
      const overSubject = { outcome: 'too_large', detail: `subject over ${formatBytes(FIELD_BOUNDS.subject)} bytes`, subject: null };
      const overEmail = { outcome: 'too_large', detail: `email over ${formatBytes(FIELD_BOUNDS.email)} bytes`, subject: 'mallory' };
      expect(events).to.deep.equal([overSubject, overEmail, overSubject, overEmail]);
      const { rows } = await stack.db.pool.query('SELECT count(*)::int AS n FROM grants WHERE idp = $1', [IDP_NAME]);
      expect(rows[0].n, 'grants of the hostile IdP').to.equal(0);
      // Refused for good before the spool, not set aside where `captures retry` could never write them.
      const quarantined = await stack.db.pool.query('SELECT count(*)::int AS n FROM quarantined_captures');
      expect(quarantined.rows[0].n, 'quarantined captures').to.equal(0);
      const logs = firstLogs + stack.sidecar!.logs();
      expect(logs.includes(bigSubject.slice(0, 64)), 'the 3 KB sub in the log').to.equal(false);
      expect(logs.includes(bigEmail.slice(0, 64)), 'the 3 KB email in the log').to.equal(false);
    });
  });
}
