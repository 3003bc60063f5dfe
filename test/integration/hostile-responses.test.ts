// Hostile token responses, generated, through the real ext_proc gRPC protocol to a real sidecar
// writing to real Postgres. After each one a normal login (another IdP, its own user) must land in
// Postgres within a bound: no response, however shaped, may stop the writer. Those over a bound,
// not storable, unreadable or cut short must change no grant, and every one is counted and in
// capture_events (a row of its own, or counted into a summary row: see ingest/capture-refusals.ts).
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import fc from 'fast-check';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { connectExtProc, sendResponse, type ExtProcClient } from '../support/extproc-client.js';
import { buildHostile, hostileShapes } from '../support/hostile-responses.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { fakeJwt } from '../support/jwt.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const RUNS = Number(process.env.TOKEN_TAP_HOSTILE_RUNS ?? 150);
const MAX_BODY_BYTES = 256 * 1024;
/** How long the normal login after a hostile response may take to reach Postgres. */
const LANDS_WITHIN_MS = 5_000;
const REFUSED_OUTCOMES = ['too_large', 'unparseable', 'incomplete'];

describe(`hostile token responses through ext_proc to Postgres (${RUNS} generated)`, function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let running: InProcessSidecar;
  let client: ExtProcClient;

  before(async () => {
    db = await createTestDatabase('hostile');
    running = await startInProcessSidecar(
      { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_MAX_BODY_BYTES: String(MAX_BODY_BYTES) },
      'silent',
    );
    client = connectExtProc(`127.0.0.1:${running.sidecar.address.port}`);
  });
  after(async () => {
    client?.close();
    await running?.close();
    await db?.drop();
  });

  async function hostileGrants(): Promise<number> {
    const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM grants WHERE idp = 'hostile'");
    return rows[0]!.n;
  }

  /** token_tap_captures_total of the hostile IdP by outcome: a response written as an event, or counted into a summary row. */
  async function hostileOutcomes(): Promise<Map<string, number>> {
    const { values } = await running.sidecar.metrics.captures.get();
    const counts = new Map<string, number>();
    for (const { labels, value } of values) if (labels.idp === 'hostile') counts.set(String(labels.outcome), value);
    return counts;
  }

  it('a normal login after each lands in Postgres within 5 s; those refused change no grant and are counted as refused', async () => {
    const seen = new Map<string, number>();
    let sent = 0;
    await fc.assert(
      fc.asyncProperty(hostileShapes(MAX_BODY_BYTES), async (shape) => {
        const hostile = buildHostile(shape, `h-${randomUUID()}`);
        const grantsBefore = await hostileGrants();
        const before = await hostileOutcomes();
        await sendResponse(client, 'hostile', hostile);
        sent += 1;

        const subject = `n-${randomUUID()}`;
        const normal = JSON.stringify({ access_token: `at-${subject}`, refresh_token: `rt-${subject}`, id_token: fakeJwt({ sub: subject, exp: 4102444800 }) });
        await sendResponse(client, 'normal', { status: 200, headers: [['content-type', 'application/json']], body: Buffer.from(normal) });
        await waitFor(`the normal login after a ${shape.kind} response`, () => running.sidecar.store.findGrant('normal', subject), LANDS_WITHIN_MS, 10);

        // Counted once written, or at once when summarised (responses with no token, after the first of their kind).
        const outcomes = await waitFor(
          `the ${shape.kind} response counted`,
          async () => {
            const after = await hostileOutcomes();
            const grown = [...after].filter(([outcome, value]) => value > (before.get(outcome) ?? 0));
            return grown.length > 0 ? { grown, after } : undefined;
          },
          LANDS_WITHIN_MS,
          10,
        );
        const total = (counts: Map<string, number>) => [...counts.values()].reduce((sum, value) => sum + value, 0);
        expect(total(outcomes.after) - total(before), 'counted once').to.equal(1);
        const outcome = outcomes.grown[0]![0];
        seen.set(`${shape.kind} -> ${outcome}`, (seen.get(`${shape.kind} -> ${outcome}`) ?? 0) + 1);
        if (hostile.refused) {
          expect(outcome, JSON.stringify(shape).slice(0, 300)).to.be.oneOf(REFUSED_OUTCOMES);
          expect(await hostileGrants(), 'grants of the hostile IdP').to.equal(grantsBefore);
        }
      }),
      {
        numRuns: RUNS,
        // The sidecar and Postgres carry state from run to run (a wedged writer fails every later
        // run): the first failing response is the one to report, not a shrunk one.
        endOnFailure: true,
        // Always tried first: a subject and an email past the btree row limit of their indexes, and
        // lifetimes and an id_token exp no date can hold (Postgres refused the invalid Date: quarantined).
        examples: [
          [{ kind: 'oversized', field: 'sub', over: 2000, form: false, coding: 'identity' }],
          [{ kind: 'oversized', field: 'email', over: 2700, form: false, coding: 'identity' }],
          [{ kind: 'huge_number', field: 'expires_in', value: '1e300', over: 1, coding: 'identity' }],
          [{ kind: 'huge_number', field: 'refresh_token_expires_in', value: '1e300', over: 1, coding: 'gzip' }],
          [{ kind: 'huge_number', field: 'exp', value: '1e300', over: 1, coding: 'identity' }],
          [{ kind: 'huge_number', field: 'exp', value: '-8.64e12', over: 1, coding: 'identity' }],
        ],
      },
    );
    console.log(
      `      ${[...seen]
        .sort()
        .map(([what, count]) => `${what}: ${count}`)
        .join(', ')}`,
    );
    // Stopped, the sidecar writes its summary rows: every response is in capture_events, one row
    // each or counted into a summary row.
    await running.close();
    const events = await db.pool.query<{ n: number }>("SELECT coalesce(sum(count), 0)::int AS n FROM capture_events WHERE idp = 'hostile'");
    expect(events.rows[0]!.n, 'responses in capture_events').to.equal(sent);
    // Nothing failed in capture or was lost from the intake, and nothing reached Postgres that it
    // refused (the quarantine, a last resort, took nothing).
    expect(await metricValue(running.sidecar.metrics, 'capturesDropped')).to.equal(0);
    expect(await metricValue(running.sidecar.metrics, 'capturesQuarantined')).to.equal(0);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM quarantined_captures');
    expect(rows[0].n).to.equal(0);
  });
});
