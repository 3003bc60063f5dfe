// The alerts of deploy/prometheus/rules.yaml in a real Prometheus (the machine's `prometheus`, on a
// free port with its own TSDB) scraping the real sidecar's /metrics and the real Envoy's
// /stats/prometheus every second, while real faults happen: a clean run of logins fires nothing
// (not even pending); a 3 KB `sub` fires the refused-capture alert for that IdP; a GitHub profile
// capture whose held grant is under other key material (as test/e2e/quarantine.test.ts makes it:
// the sidecar restarted with k1 of the same id, other material) fires the quarantine alert; Postgres
// blackholed (through a TCP proxy: the shared server is never touched) fires the Postgres alert,
// and logins meanwhile fill the small spool (TOKEN_TAP_SPOOL_MAX_BYTES 64 KiB): the spool alerts
// and the dropped-capture alert fire; the sidecar SIGKILLed fires the sidecar-down, no-sidecar-scraped and Envoy
// fail-open alerts. Envoy is scraped as the PodMonitor does it, through its readiness listener.
// The rules are loaded as they are in rules.yaml except `for:`, cut to at most FOR_IN_TEST (derived
// here from the file, not a copy of it): minutes of `for` would not fit a test. Every wait is bounded.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { expect } from 'chai';
import { profileRoutePath, tokenRoutePath } from '../../src/contract.js';
import { STATS_PATH } from '../../src/envoyconfig/readiness.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startBlackholeProxy, type BlackholeProxy } from '../support/blackhole-proxy.js';
import { ruleGroups, type RuleGroup } from '../support/alert-rules.js';
import { driveLogins, envoyStat, sidecarMetric, type SpoolRig, startSpoolRig } from '../support/faults.js';
import { canned, sendRaw, startFixtureIdp, type FixtureIdp } from '../support/fixture-idp.js';
import { loginAsOkta } from '../support/okta-client.js';
import { freePort, waitFor } from '../support/ports.js';
import { type ActiveAlert, findAlert, type RunningPrometheus, startPrometheus } from '../support/prometheus.js';

const FOR_IN_TEST = '2s';
// Small enough that the blackhole test fills it in seconds; large enough that a clean run under load
// never holds 10 % of it waiting (TokenTapSpoolFillingUp's floor), which 64 KiB did on a busy machine.
const SPOOL_CAP_BYTES = 256 * 1024;
/** Random, so it cannot be compressed under the bound (test/e2e/poison-fields.test.ts). */
const bigSubject = randomBytes(2300).toString('base64url');

/** rules.yaml with every `for:` longer than FOR_IN_TEST cut to it; nothing else changed. */
function rulesForTest(): RuleGroup[] {
  return ruleGroups().map((group) => ({ ...group, rules: group.rules.map((rule) => (rule.for ? { ...rule, for: FOR_IN_TEST } : rule)) }));
}

const describeAlert = (alert: ActiveAlert) =>
  `${alert.labels.alertname}{${Object.entries(alert.labels)
    .filter(([key]) => key !== 'alertname')
    .map(([key, value]) => `${key}="${value}"`)
    .join(',')}} ${alert.state}`;

describe('alerts in a real Prometheus scraping the real sidecar and Envoy, under real faults', function () {
  this.timeout(150_000);
  let rig: SpoolRig;
  let proxy: BlackholeProxy;
  let prometheus: RunningPrometheus;
  let opsPort: number;
  let proxiedUrl: string;
  let hookDir: string | undefined;
  /** GitHub-style token and profile endpoints, behind the rig's Envoy, for the quarantined capture. */
  let github: FixtureIdp;
  /** The sidecar's environment, kept for its restart with other key material. */
  let sidecarEnv: Record<string, string>;

  before(async () => {
    github = await startFixtureIdp();
    rig = await startSpoolRig(
      'observability',
      'alerts',
      { accounts: { alice: { email: 'alice@example.test' }, [bigSubject]: { email: 'big-sub@hostile.example' } } },
      {
        moreIdps: [{ name: 'github', tokenUrl: new URL(github.url('/github/token')) }],
        profiles: [{ name: 'github', profileUrl: new URL(github.url('/github/user')), subjectField: 'id' }],
      },
    );
    const direct = new URL(rig.db.url);
    proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const proxied = new URL(rig.db.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    proxiedUrl = proxied.toString();
    opsPort = await freePort();
    // The API and the Okta hook on, so their metrics are in the scrape the dashboard is checked against.
    hookDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-alerts-hook-'));
    writeFileSync(
      path.join(hookDir, 'hook.yaml'),
      stringify({
        authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET' } },
        providers: [{ okta_idp_id: '0oaUPSTREAM1', idp: 'demo', match: 'email', identity_claims: { upstream_sub: 'sub' }, allow_unverified: true }],
      }),
    );
    sidecarEnv = {
      // Fingerprints kept across the restart with other k1 material, so the profile call finds the held grant.
      TOKEN_TAP_FINGERPRINT_KEY: randomBytes(32).toString('base64'),
      TOKEN_TAP_API_LISTEN: `127.0.0.1:${await freePort()}`,
      TOKEN_TAP_HOOK_LISTEN: `127.0.0.1:${await freePort()}`,
      TOKEN_TAP_HOOK_CONFIG: path.join(hookDir, 'hook.yaml'),
      OKTA_HOOK_SECRET: randomBytes(24).toString('base64url'),
      // A fixed ops port: the one Prometheus scrapes.
      TOKEN_TAP_OPS_LISTEN: `127.0.0.1:${opsPort}`,
      TOKEN_TAP_SPOOL_MAX_BYTES: String(SPOOL_CAP_BYTES),
      // A blackholed Postgres is noticed in about a second, not twelve.
      TOKEN_TAP_PG_CONNECT_TIMEOUT_MS: '1000',
      TOKEN_TAP_PG_STATEMENT_TIMEOUT_MS: '1000',
      TOKEN_TAP_PG_QUERY_TIMEOUT_MS: '1500',
      TOKEN_TAP_SHUTDOWN_GRACE_MS: '1000',
    };
    await rig.start(proxiedUrl, sidecarEnv);
    await waitFor('the schema', async () => ((await sidecarMetric(opsPort, 'token_tap_postgres_up')) === 1 ? true : undefined), 20_000);
    prometheus = await startPrometheus({
      targets: [
        { job: 'token-tap-sidecar', target: `127.0.0.1:${opsPort}` },
        // As the PodMonitor does: Envoy's stats through its readiness listener, not the admin port.
        { job: 'token-tap-envoy', target: new URL(rig.front.readyUrl).host, metricsPath: STATS_PATH },
      ],
      groups: rulesForTest(),
    });
    await waitFor('Prometheus to scrape both targets', async () => ((await prometheus.query('up == 1')).length === 2 ? true : undefined), 15_000, 200).catch(
      async (error: Error) => {
        const targets = (await (await fetch(`${prometheus.url}/api/v1/targets`)).json()) as {
          data: { activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> };
        };
        throw new Error(
          `${error.message}: ${targets.data.activeTargets.map((target) => `${target.scrapeUrl} ${target.health} ${target.lastError}`).join('; ')}`,
        );
      },
    );
    // Before its first scrapes this Prometheus has no up series, so the absent() alerts fire at once
    // (their `for` cut to FOR_IN_TEST; 5 minutes in rules.yaml outlast a first scrape): wait for an
    // evaluation after the scrapes to resolve them, and nothing else.
    await waitFor(
      'the target-missing alerts of the start to resolve',
      async () => ((await prometheus.alerts()).some((alert) => alert.labels.alertname?.endsWith('TargetMissing')) ? undefined : true),
      10_000,
      200,
    );
  });
  after(async () => {
    await prometheus?.stop();
    await rig?.close();
    await proxy?.close();
    await github?.close();
    if (hookDir) rmSync(hookDir, { recursive: true, force: true });
  });

  /** Waits (at most `withinMs`) for every alert named to be firing; returns how long it took. */
  async function firing(what: string, wanted: Array<[string, Record<string, string>?]>, withinMs: number, meanwhile?: () => Promise<unknown>): Promise<number> {
    const started = Date.now();
    let last: ActiveAlert[] = [];
    let done = false;
    const driving = meanwhile
      ? (async () => {
          while (!done && Date.now() - started < withinMs) await meanwhile();
        })()
      : Promise.resolve();
    try {
      await waitFor(
        what,
        async () => {
          last = await prometheus.alerts();
          return wanted.every(([name, labels]) => findAlert(last, name, labels)) ? true : undefined;
        },
        withinMs,
        250,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}; active: ${last.map(describeAlert).join(', ') || 'none'}`);
    } finally {
      done = true;
      await driving;
    }
    const ms = Date.now() - started;
    console.log(`      ${what}: ${wanted.map(([name]) => name).join(', ')} firing after ${ms} ms`);
    return ms;
  }

  it('fires nothing, not even pending, during a clean run of logins', async () => {
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 20, concurrency: 2 });
    expect(tally.ok).to.equal(tally.total);
    await waitFor('the logins in Postgres', async () => ((await sidecarMetric(opsPort, 'token_tap_capture_queue_depth')) === 0 ? true : undefined), 10_000);
    // Several scrapes and evaluations after the logins, each looked at.
    const seen: ActiveAlert[] = [];
    const until = Date.now() + 5_000;
    while (Date.now() < until) {
      seen.push(...(await prometheus.alerts()));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const rules = await prometheus.query('count(ALERTS)');
    expect(seen.map(describeAlert)).to.deep.equal([]);
    expect(rules).to.deep.equal([]);
    // The rules were evaluated against live series, not against nothing.
    expect((await prometheus.query('token_tap_captures_total{outcome="stored"}')).map((sample) => Number(sample.value[1]))).to.deep.equal([tally.ok]);
    expect(await prometheus.query('envoy_http_ext_proc_token_tap_failure_mode_allowed')).to.have.length(1);
    const lastStored = await sidecarMetric(opsPort, 'token_tap_capture_last_stored_timestamp_seconds');
    expect(Date.now() / 1000 - lastStored).to.be.within(0, 30);
    expect(await sidecarMetric(opsPort, 'token_tap_spool_max_bytes')).to.equal(SPOOL_CAP_BYTES);
  });

  it('every query of the Grafana dashboard (deploy/grafana/token-tap.json) names only metrics the live scrape of the sidecar and Envoy exposes', async () => {
    const dashboard = JSON.parse(readFileSync(fileURLToPath(new URL('../../../deploy/grafana/token-tap.json', import.meta.url)), 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
    };
    const exposed = new Set<string>();
    for (const url of [`http://127.0.0.1:${opsPort}/metrics`, `${new URL(rig.front.readyUrl).origin}${STATS_PATH}`]) {
      for (const [, name, type] of (await (await fetch(url)).text()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        exposed.add(name!);
        if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(`${name}${suffix}`);
      }
    }
    const queries = dashboard.panels.flatMap((panel) => panel.targets.map((target) => ({ panel: panel.title, expr: target.expr })));
    const named = queries.flatMap(({ panel, expr }) =>
      [...expr.replace(/\{[^}]*\}/g, '').matchAll(/\b(?:token_tap|envoy)_[a-z0-9_]+\b/g)].map((match) => ({ panel, name: match[0] })),
    );
    const unknown = named.filter(({ name }) => !exposed.has(name)).map(({ panel, name }) => `${panel}: ${name}`);
    expect(queries.length).to.be.at.least(10);
    expect(new Set(named.map(({ name }) => name)).size).to.be.at.least(15);
    expect(unknown).to.deep.equal([]);
    // The check can fail: a name no scrape has is caught (and label matchers are not taken for names).
    expect(exposed.has('token_tap_no_such_metric_total')).to.equal(false);
    expect(named.map(({ name }) => name)).to.not.include('token_tap_sidecar');
  });

  it('a 3 KB sub: the refused-capture alert fires for that IdP', async () => {
    const login = await loginAsOkta(rig.idp, rig.front.tokenUrl, { loginHint: bigSubject });
    expect(login.claims.sub).to.equal(bigSubject);
    await firing('a capture over its bound', [['TokenTapCapturesRefused', { idp: 'demo', outcome: 'too_large' }]], 15_000);
    const alert = findAlert(await prometheus.alerts(), 'TokenTapCapturesRefused')!;
    expect(alert.annotations.description).to.contain('IdP demo');
    expect(alert.annotations.runbook_url).to.equal('docs/runbooks.md#tokentapcapturesrefused');
  });

  it('a held grant under other key material: the quarantine alert fires for that IdP', async () => {
    const accessToken = `gho_${randomUUID().replaceAll('-', '')}`;
    github.serve(
      '/github/token',
      canned(200, { 'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8' }, `access_token=${accessToken}&scope=read%3Auser&token_type=bearer`),
    );
    const tokenCall = await sendRaw(`${rig.front.origin}${tokenRoutePath('github')}`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=authorization_code&code=abc',
    });
    expect(tokenCall.status).to.equal(200);
    const heldGrants = async () => (await rig.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pending_grants')).rows[0]!.n;
    await waitFor('the held grant', async () => ((await heldGrants()) === 1 ? true : undefined), 10_000, 100);
    // Prometheus must have seen GitHub's quarantine series at 0 (this sidecar started it so at the
    // token call): after the restart it comes back at 1, and a series only ever seen at 1 shows no increase().
    await waitFor(
      "GitHub's quarantine series scraped at 0",
      async () => ((await prometheus.query('token_tap_captures_quarantined_total{idp="github",reason="unreadable"} == 0')).length === 1 ? true : undefined),
      5_000,
      200,
    );

    // The sidecar back with k1 of the same id and other material (a botched key change); as
    // Stack.restartSidecarSeenByEnvoy does, wait for a health check that reached the new one.
    await rig.stopSidecar('SIGTERM');
    const checked = () => envoyStat(rig.front.envoy, 'cluster.token_tap_sidecar.health_check.success');
    const checksBefore = await checked();
    await rig.start(proxiedUrl, { ...sidecarEnv, TOKEN_TAP_KEYS: generateKeySpec('k1') });
    await waitFor(
      'Envoy to health-check the restarted sidecar',
      async () =>
        (await checked()) > checksBefore && (await envoyStat(rig.front.envoy, 'cluster.token_tap_sidecar.membership_healthy')) === 1 ? true : undefined,
      10_000,
      50,
    );
    github.serve(
      '/github/user',
      canned(200, { 'Content-Type': 'application/json; charset=utf-8' }, JSON.stringify({ login: 'octocat', id: 583231 })),
      accessToken,
    );
    const profileCall = await sendRaw(`${rig.front.origin}${profileRoutePath('github')}`, {
      method: 'GET',
      headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
    });
    expect(profileCall.status).to.equal(200);

    await firing('a capture quarantined', [['TokenTapCapturesQuarantined', { idp: 'github', reason: 'unreadable' }]], 15_000);
    const alert = findAlert(await prometheus.alerts(), 'TokenTapCapturesQuarantined')!;
    expect(alert.annotations.description).to.contain('IdP github');
    expect(alert.annotations.runbook_url).to.equal('docs/runbooks.md#tokentapcapturesquarantined');
    // The alert is about this capture, quarantined as quarantine.test.ts shows, and only it.
    const { rows } = await rig.db.pool.query<{ idp: string; reason: string }>('SELECT idp, reason FROM quarantined_captures');
    expect(rows).to.deep.equal([{ idp: 'github', reason: 'cannot open a held grant (DecryptError)' }]);
    expect(await heldGrants(), 'the held grant is left as it was').to.equal(1);
  });

  it('Postgres blackholed while logins fill the spool: the Postgres, spool and dropped-capture alerts fire', async () => {
    proxy.blackhole();
    const loginsNow = () => driveLogins(rig.idp, rig.front.tokenUrl, { count: 4, concurrency: 2 });
    const holedAt = Date.now();
    await firing('Postgres blackholed', [['TokenTapPostgresUnreachable']], 20_000, loginsNow);
    // The age of the oldest waiting capture grows while nothing reaches Postgres (scraped, not set by an event).
    const age = await sidecarMetric(opsPort, 'token_tap_capture_oldest_waiting_seconds');
    expect(age)
      .to.be.above(1)
      .and.at.most((Date.now() - holedAt) / 1000 + 1);
    await firing(
      'the spool filling up',
      [['TokenTapSpoolNearlyFull'], ['TokenTapSpoolFillingUp'], ['TokenTapCapturesDropped', { reason: 'spool_full' }]],
      30_000,
      loginsNow,
    );
    proxy.heal();
    await waitFor(
      'the spool written to Postgres after the heal',
      async () => ((await sidecarMetric(opsPort, 'token_tap_capture_queue_depth')) === 0 ? true : undefined),
      30_000,
      200,
    );
    expect(await sidecarMetric(opsPort, 'token_tap_capture_oldest_waiting_seconds'), 'none waits once the spool is written').to.equal(0);
    await waitFor(
      'the Postgres alert to resolve',
      async () => (findAlert(await prometheus.alerts(), 'TokenTapPostgresUnreachable') ? undefined : true),
      10_000,
      250,
    );
  });

  // No sidecar target answering is also what absent(up == 1) sees (TokenTapSidecarTargetMissing).
  it('the sidecar SIGKILLed: the sidecar-down, no-sidecar-scraped and Envoy fail-open alerts fire', async () => {
    await rig.stopSidecar('SIGKILL');
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 5, concurrency: 1 });
    expect(tally.ok, 'logins go on without the sidecar').to.equal(tally.total);
    await firing(
      'the sidecar killed',
      [
        ['TokenTapSidecarDown', { job: 'token-tap-sidecar' }],
        ['TokenTapSidecarTargetMissing', { job: 'token-tap-sidecar' }],
        ['TokenTapEnvoyFailingOpen', { job: 'token-tap-envoy' }],
      ],
      15_000,
    ).catch(async (error: Error) => {
      const stats = (await (await fetch(`${rig.front.envoy.adminUrl}/stats/prometheus`)).text())
        .split('\n')
        .filter((line) => /ext_proc_token_tap_(failure|streams)|token_tap_sidecar.*(membership_healthy|connect_fail)/.test(line) && !line.startsWith('#'));
      throw new Error(
        `${error.message}\n${stats.join('\n')}\n${JSON.stringify(await prometheus.query('envoy_http_ext_proc_token_tap_failure_mode_allowed[30s]'))}`,
      );
    });
  });
});
