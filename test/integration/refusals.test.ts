// Refusals are cheap (issue "poison-proof ingest"): a flood of unauthenticated Okta hook calls, or
// of token responses that hold no token, through the sidecar in process, over real HTTP and real
// gRPC (ext_proc), into the real Postgres: a handful of rows whose counts add up, not a row each.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Registry } from 'prom-client';
import { stringify } from 'yaml';
import { OKTA_HOOK_PATH } from '../../src/contract.js';
import { DEFAULT_MAX_KEYS_PER_IDP } from '../../src/ingest/capture-refusals.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { connectExtProc, openStream, type ExtProcClient } from '../support/extproc-client.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const SECRET = 'refusals-hook-secret-0f3b9c2e';

function hookConfigFile(dir: string): string {
  const file = path.join(dir, 'hook.yaml');
  writeFileSync(
    file,
    stringify({
      authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET' } },
      providers: [{ okta_idp_id: '0oaUPSTREAM1', idp: 'acme', match: 'email', identity_claims: { upstream_groups: 'groups' } }],
    }),
  );
  return file;
}

async function registryValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const { values } = await registry.getSingleMetric(name)!.get();
  return values.filter((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted)).reduce((sum, value) => sum + value.value, 0);
}

/** `total` POSTs to the hook over `concurrency` keep-alive connections; the statuses seen, counted. */
async function flood(port: number, total: number, concurrency: number, authorization: string): Promise<Map<number, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses = new Map<number, number>();
  const body = Buffer.from('{"eventType":"com.okta.oauth2.tokens.transform","data":{}}');
  let sent = 0;
  const one = () =>
    new Promise<number>((resolve, reject) => {
      const request = http.request(
        {
          host: '127.0.0.1',
          port,
          path: OKTA_HOOK_PATH,
          method: 'POST',
          agent,
          headers: { authorization, 'content-type': 'application/json', 'content-length': body.length },
        },
        (response) => {
          response.resume();
          response.on('end', () => resolve(response.statusCode ?? 0));
        },
      );
      request.on('error', reject);
      request.end(body);
    });
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (sent < total) {
          sent += 1;
          const status = await one();
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return statuses;
}

/** One observability-mode token response on its own ext_proc stream, as Envoy sends it. */
async function junkResponse(client: ExtProcClient, status: number, body: string, idp = 'acme', headers: Array<[string, string]> = []): Promise<void> {
  const call = openStream(client, idp);
  const all: Array<[string, string]> = [[':status', String(status)], ['content-type', 'application/json'], ...headers];
  call.write({ response_headers: { headers: { headers: all.map(([key, value]) => ({ key, raw_value: Buffer.from(value) })) } }, observability_mode: true });
  call.write({ response_body: { body: Buffer.from(body), end_of_stream: true }, observability_mode: true });
  call.end();
  await once(call, 'status');
}

async function inBatches(count: number, batch: number, work: (index: number) => Promise<void>): Promise<void> {
  for (let start = 0; start < count; start += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, count - start) }, (_, offset) => work(start + offset)));
  }
}

describe('refusals are summarised, not written one row each (integration)', function () {
  this.timeout(180_000);
  let dir: string;

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-refusals-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function start(db: TestDatabase, extra: Record<string, string> = {}): Promise<InProcessSidecar> {
    return startInProcessSidecar({
      DATABASE_URL: db.url,
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_HOOK_LISTEN: '127.0.0.1:0',
      TOKEN_TAP_HOOK_CONFIG: hookConfigFile(dir),
      OKTA_HOOK_SECRET: SECRET,
      ...extra,
    });
  }

  describe('with the default interval (60 s)', () => {
    let db: TestDatabase;
    let running: InProcessSidecar;

    before(async () => {
      db = await createTestDatabase('refusals');
      running = await start(db);
    });
    after(async () => {
      await running?.close();
      await db?.drop();
    });

    it('50,000 unauthenticated hook calls from one client: at most 100 access_events rows, their counts adding up to 50,000, the metric 50,000', async () => {
      const { sidecar } = running;
      const started = Date.now();
      const statuses = await flood(sidecar.hook!.address.port, 50_000, 50, 'Bearer not-the-secret');
      const seconds = (Date.now() - started) / 1000;
      console.log(`      50,000 refused hook calls in ${seconds.toFixed(1)} s (${Math.round(50_000 / seconds)}/s)`);
      expect([...statuses]).to.deep.equal([[401, 50_000]]);
      expect(await registryValue(sidecar.metrics.registry, 'token_tap_okta_hook_calls_total', { outcome: 'unauthenticated' })).to.equal(50_000);
      // Authenticated calls keep a row each, as before (this request names no Okta IdP: no_provider).
      expect([...(await flood(sidecar.hook!.address.port, 3, 1, SECRET))]).to.deep.equal([[200, 3]]);
      // Shutdown writes the summary of the interval still open.
      await running.close();
      const { rows } = await db.pool.query<{ outcome: string; count: number; peer: string }>(
        "SELECT outcome, count, peer FROM access_events WHERE operation = 'okta_hook' ORDER BY id",
      );
      const refused = rows.filter((row) => row.outcome === 'unauthenticated');
      expect(refused.length, 'rows of refused calls').to.be.at.least(2).and.at.most(100);
      expect(refused.reduce((sum, row) => sum + row.count, 0)).to.equal(50_000);
      expect(refused[0]).to.deep.include({ count: 1 });
      expect(rows.filter((row) => row.outcome === 'no_provider').map((row) => row.count)).to.deep.equal([1, 1, 1]);
      const lines = running.log.lines().filter((line) => typeof line.msg === 'string' && (line.msg as string).startsWith('okta hook call'));
      expect(lines.length, 'hook log lines').to.be.at.most(10);
      expect(await registryValue(sidecar.metrics.registry, 'token_tap_refusals_summarised_total', { source: 'okta_hook' })).to.equal(
        50_000 - refused.length + 1,
      );
    });
  });

  describe('junk token responses through ext_proc', () => {
    let db: TestDatabase;
    let running: InProcessSidecar;

    before(async () => {
      db = await createTestDatabase('refusals_capture');
      running = await start(db);
    });
    after(async () => {
      await running?.close();
      await db?.drop();
    });

    it('2,000 idp_error and 2,000 unparseable responses: a few capture_events rows whose counts add up, the metric counting each', async () => {
      const { sidecar } = running;
      const client = connectExtProc(`127.0.0.1:${sidecar.address.port}`);
      try {
        await inBatches(4_000, 200, (index) =>
          index % 2 === 0 ? junkResponse(client, 400, '{"error":"invalid_grant"}') : junkResponse(client, 200, '<html>not json</html>'),
        );
      } finally {
        client.close();
      }
      await waitFor(
        'every response handled',
        async () => ((await metricValue(sidecar.metrics, 'captures', { idp: 'acme' })) >= 3_998 ? true : undefined),
        30_000,
      );
      await running.close();
      const { rows } = await db.pool.query<{ outcome: string; error_code: string | null; count: number }>(
        "SELECT outcome, error_code, count FROM capture_events WHERE idp = 'acme' ORDER BY id",
      );
      expect(rows.length, 'capture_events rows').to.be.at.most(6);
      const total = (outcome: string) => rows.filter((row) => row.outcome === outcome).reduce((sum, row) => sum + row.count, 0);
      expect(total('idp_error')).to.equal(2_000);
      expect(total('unparseable')).to.equal(2_000);
      expect(await metricValue(sidecar.metrics, 'captures', { idp: 'acme', outcome: 'idp_error' })).to.equal(2_000);
      expect(await metricValue(sidecar.metrics, 'captures', { idp: 'acme', outcome: 'unparseable' })).to.equal(2_000);
      expect(await metricValue(sidecar.metrics, 'spoolAppended')).to.equal(2);
    });
  });

  describe('an IdP choosing a content-encoding per response', () => {
    let db: TestDatabase;
    let running: InProcessSidecar;

    before(async () => {
      db = await createTestDatabase('refusals_codings');
      running = await start(db);
    });
    after(async () => {
      await running?.close();
      await db?.drop();
    });

    it(`2,000 responses with 2,000 invented 1 KB encodings: at most ${DEFAULT_MAX_KEYS_PER_IDP} + 1 spooled, no header text in capture_events, another IdP's refusal still its own row`, async () => {
      const { sidecar } = running;
      const client = connectExtProc(`127.0.0.1:${sidecar.address.port}`);
      try {
        await inBatches(2_000, 200, (index) =>
          junkResponse(client, 200, '{"access_token":"x"}', 'acme', [['content-encoding', `x-idp-chosen-${index}-${'z'.repeat(1_000)}`]]),
        );
        await junkResponse(client, 400, '{"error":"invalid_client"}', 'other');
      } finally {
        client.close();
      }
      await waitFor(
        'every response handled',
        async () => ((await metricValue(sidecar.metrics, 'captures', { idp: 'acme' })) >= 2_000 - (DEFAULT_MAX_KEYS_PER_IDP + 1) ? true : undefined),
        30_000,
      );
      await waitFor('the other IdP handled', async () => ((await metricValue(sidecar.metrics, 'captures', { idp: 'other' })) >= 1 ? true : undefined), 30_000);
      await running.close();
      const { rows } = await db.pool.query<{ idp: string; outcome: string; error_code: string | null; detail: string | null; count: number }>(
        'SELECT idp, outcome, error_code, detail, count FROM capture_events ORDER BY id',
      );
      const acme = rows.filter((row) => row.idp === 'acme');
      console.log(
        `      2,000 responses with invented encodings: ${await metricValue(sidecar.metrics, 'spoolAppended')} spooled (both IdPs), ${acme.length} capture_events rows of the IdP`,
      );
      expect(acme.reduce((sum, row) => sum + row.count, 0)).to.equal(2_000);
      expect(acme.length, 'capture_events rows of the IdP').to.be.at.most(DEFAULT_MAX_KEYS_PER_IDP + 2);
      expect(await metricValue(sidecar.metrics, 'spoolAppended')).to.be.at.most(DEFAULT_MAX_KEYS_PER_IDP + 2);
      for (const row of rows) {
        expect((row.detail ?? '').length).to.be.at.most(200);
        expect(row.detail ?? '').to.not.contain('idp-chosen');
      }
      expect(rows.filter((row) => row.idp === 'other').map((row) => [row.outcome, row.error_code, row.count])).to.deep.equal([
        ['idp_error', 'invalid_client', 1],
      ]);
    });
  });

  describe('with a short interval (TOKEN_TAP_REFUSAL_SUMMARY_MS=400)', () => {
    let db: TestDatabase;
    let running: InProcessSidecar;

    before(async () => {
      db = await createTestDatabase('refusals_tick');
      running = await start(db, { TOKEN_TAP_REFUSAL_SUMMARY_MS: '400' });
    });
    after(async () => {
      await running?.close();
      await db?.drop();
    });

    it('writes the summary rows when the interval ends, without waiting for shutdown', async () => {
      const { sidecar } = running;
      await flood(sidecar.hook!.address.port, 30, 5, 'wrong');
      const client = connectExtProc(`127.0.0.1:${sidecar.address.port}`);
      try {
        await inBatches(20, 20, () => junkResponse(client, 400, '{"error":"invalid_client"}'));
      } finally {
        client.close();
      }
      const hookRows = await waitFor(
        'the hook summary row',
        async () => {
          const { rows } = await db.pool.query<{ count: number }>("SELECT count FROM access_events WHERE operation = 'okta_hook' ORDER BY id");
          return rows.reduce((sum, row) => sum + row.count, 0) === 30 ? rows : undefined;
        },
        10_000,
      );
      expect(hookRows.length).to.be.at.most(3);
      const captureRows = await waitFor(
        'the capture summary row',
        async () => {
          const { rows } = await db.pool.query<{ count: number }>("SELECT count FROM capture_events WHERE idp = 'acme' ORDER BY id");
          return rows.reduce((sum, row) => sum + row.count, 0) === 20 ? rows : undefined;
        },
        10_000,
      );
      expect(captureRows.length).to.be.at.most(3);
    });
  });
});
