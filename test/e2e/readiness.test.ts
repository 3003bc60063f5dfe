// Readiness across a sidecar restart, through the real Envoy: logins run without a pause while the
// sidecar is stopped and started again, and the pod's readiness is sampled as the shipped pod
// computes it (deploy/kubernetes: Envoy's container probe GET /ready on the readiness listener, and
// the sidecar's /readyz; the pod is ready when both answer 200). Envoy's /ready answers 200 only
// while its health check has found the sidecar healthy (envoyconfig/readiness.ts). Before it, the
// sidecar's /readyz alone turned 200 while Envoy still skipped the new sidecar (panic threshold 0)
// and relayed logins uncaptured. The test prints the window and asserts that every login begun
// after readiness came back is captured.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse } from 'yaml';
import { ENVOY_READY_PORT } from '../../src/contract.js';
import { parseKeyRing, fingerprint } from '../../src/keys/key-ring.js';
import { storedFingerprints, waitForSidecarHealth } from '../support/faults.js';
import { loginAsOkta } from '../support/okta-client.js';
import { freePort, waitFor } from '../support/ports.js';
import { startStack, type Stack } from '../support/stack.js';

interface Login {
  startedAt: number;
  accessToken?: string;
  error?: string;
}

interface Sample {
  at: number;
  envoy: boolean;
  sidecar: boolean;
}

async function answers200(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(500) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const signal of ['SIGTERM', 'SIGKILL'] as NodeJS.Signals[]) {
  describe(`readiness across a sidecar restart (${signal}), through the real Envoy`, function () {
    this.timeout(120_000);
    let stack: Stack;
    let opsPort: number;

    before(async () => {
      opsPort = await freePort();
      // One ops port across the restart: the probe asks the same address before and after, as the kubelet does.
      stack = await startStack('observability', {
        label: `ready_${signal.toLowerCase()}`,
        sidecarEnv: { TOKEN_TAP_OPS_LISTEN: `127.0.0.1:${opsPort}`, LOG_LEVEL: 'info' },
      });
      await waitForSidecarHealth(stack.envoy, true);
    });
    after(async () => {
      await stack?.stop();
    });

    it('turns ready only once Envoy sees the new sidecar healthy, and every login begun after that is captured', async () => {
      const t0 = performance.now();
      const now = () => performance.now() - t0;
      let running = true;
      const samples: Sample[] = [];
      const sampler = (async () => {
        while (running) {
          const [envoy, sidecar] = await Promise.all([answers200(stack.readyUrl), answers200(`http://127.0.0.1:${opsPort}/readyz`)]);
          // Stamped when both answers are in: a prober learns the state no sooner.
          samples.push({ at: now(), envoy, sidecar });
          await sleep(20);
        }
      })();
      const logins: Login[] = [];
      const driver = async () => {
        while (running) {
          const login: Login = { startedAt: now() };
          logins.push(login);
          try {
            login.accessToken = (await loginAsOkta(stack.idp, stack.tokenUrl)).tokens.access_token;
          } catch (error) {
            login.error = (error as Error).message;
          }
        }
      };
      const drivers = Promise.all([driver(), driver()]);

      await sleep(1_000);
      const stoppedAt = now();
      await stack.sidecar!.stop(signal);
      // Down long enough for Envoy's health check to mark it unhealthy, as any restart slower than
      // about a second is (a container restarted by the kubelet, a pod rescheduled).
      await waitForSidecarHealth(stack.envoy, false);
      const unhealthyAt = now();
      const startingAt = now();
      await stack.restartSidecar();
      const startedAt = now();
      // Ready again: the first sample after the stop with both probes at 200, the last one before it not.
      const readyAt = async () => {
        const after = samples.filter((sample) => sample.at >= stoppedAt);
        const firstDown = after.findIndex((sample) => !(sample.envoy && sample.sidecar));
        if (firstDown < 0) return undefined;
        return after.slice(firstDown).find((sample) => sample.envoy && sample.sidecar)?.at;
      };
      const ready = await waitFor('the pod to be ready again', readyAt, 15_000);
      await sleep(2_000);
      running = false;
      await Promise.all([drivers, sampler]);

      // Every capture there will be is in Postgres once the count stops moving.
      const ring = parseKeyRing(stack.sidecarEnv.TOKEN_TAP_KEYS!);
      let last = -1;
      await waitFor(
        'the captures to settle',
        async () => {
          const count = (await storedFingerprints(stack.db.pool)).length;
          const settled = count === last;
          last = count;
          return settled ? true : undefined;
        },
        30_000,
        1_000,
      );
      const stored = new Set(await storedFingerprints(stack.db.pool));
      const captured = (login: Login) => login.accessToken !== undefined && stored.has(fingerprint(ring, login.accessToken));
      const afterStop = logins.filter((login) => login.startedAt >= stoppedAt);
      const missed = afterStop.filter((login) => !captured(login));
      const firstCaptured = afterStop.find(captured)?.startedAt;
      const sidecarReadyAt = samples.find((sample) => sample.at >= startingAt && sample.sidecar)?.at;
      const missedAfterSidecarReady = sidecarReadyAt === undefined ? 0 : missed.filter((login) => login.startedAt >= sidecarReadyAt).length;
      const missedAfterReady = missed.filter((login) => login.startedAt >= ready);
      const rel = (at: number | undefined) => (at === undefined ? 'never' : `${Math.round(at - stoppedAt)} ms`);
      console.log(
        `      ${signal}: ${logins.length} logins (${logins.filter((login) => login.error).length} failed), ${afterStop.length} begun after the stop at 0 ms; ` +
          `Envoy saw it unhealthy at ${rel(unhealthyAt)}, new sidecar spawned at ${rel(startingAt)}, up at ${rel(startedAt)}; its /readyz 200 at ${rel(sidecarReadyAt)}; ` +
          `pod ready (Envoy /ready and /readyz) at ${rel(ready)}; first login captured again begun at ${rel(firstCaptured)}; ` +
          `not captured: ${missed.length} (begun ${missed.length ? `${rel(missed[0]!.startedAt)} to ${rel(missed.at(-1)!.startedAt)}` : '-'}), ` +
          `of them begun after /readyz alone said ready: ${missedAfterSidecarReady}, after the pod was ready: ${missedAfterReady.length}`,
      );
      expect(logins.filter((login) => login.error).map((login) => login.error)).to.deep.equal([]);
      expect(logins.filter((login) => login.startedAt >= ready).length, 'logins after ready').to.be.greaterThan(10);
      expect(
        missedAfterReady.map((login) => rel(login.startedAt)),
        'logins begun after the pod was ready again, not captured',
      ).to.deep.equal([]);
      // Ready no sooner than Envoy would hand a login to the new sidecar: a login begun just before it is captured.
      expect(firstCaptured, 'a login captured after the restart').to.not.equal(undefined);
    });
  });
}

describe("the shipped probes ask Envoy's readiness listener, through the real Envoy", function () {
  this.timeout(60_000);
  let stack: Stack;

  before(async () => {
    stack = await startStack('observability', { label: 'ready_probe' });
    await waitForSidecarHealth(stack.envoy, true);
  });
  after(async () => {
    await stack?.stop();
  });

  it("docker-compose.yml's Envoy health check passes while Envoy sees the sidecar healthy, and fails once it does not", async () => {
    const compose = parse(readFileSync(fileURLToPath(new URL('../../../docker-compose.yml', import.meta.url)), 'utf8')) as {
      services: { envoy: { healthcheck: { test: string[] } } };
    };
    const [kind, shell, flag, script] = compose.services.envoy.healthcheck.test;
    expect([kind, shell, flag]).to.deep.equal(['CMD', 'bash', '-c']);
    // The same script, aimed at this test's Envoy (compose's is on 127.0.0.1:9902).
    const readyPort = new URL(stack.readyUrl).port;
    expect(script).to.contain(`/dev/tcp/127.0.0.1/${ENVOY_READY_PORT}`);
    const run = () =>
      spawnSync('bash', ['-c', script!.replace(`/dev/tcp/127.0.0.1/${ENVOY_READY_PORT}`, `/dev/tcp/127.0.0.1/${readyPort}`)], { timeout: 5_000 }).status;
    expect(run(), 'healthy sidecar').to.equal(0);
    await stack.sidecar!.stop('SIGKILL');
    await waitForSidecarHealth(stack.envoy, false);
    expect(run(), 'sidecar down').to.not.equal(0);
    expect((await fetch(stack.readyUrl)).status).to.equal(503);
    await stack.restartSidecar();
    await waitForSidecarHealth(stack.envoy, true);
    expect(run(), 'sidecar back').to.equal(0);
  });
});
