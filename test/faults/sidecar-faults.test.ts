// The sidecar absent, killed, stalled or speaking ext_proc badly: through the real Envoy, every
// login still succeeds and Okta receives the IdP's response unchanged.
import { expect } from 'chai';
import type { ProcessingMode } from '../../src/envoyconfig/render.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startBadExtProc, type BadBehaviour } from '../support/bad-extproc.js';
import { driveLogins, envoyStat, startFaultEnvoy, waitForSidecarHealth, type FaultEnvoy, type LoginTally } from '../support/faults.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess } from '../support/sidecar.js';

const BAD: Array<{ behaviour: BadBehaviour; what: string }> = [
  { behaviour: 'stall', what: 'takes every stream and never answers (stalled past message_timeout)' },
  { behaviour: 'error', what: 'closes every stream with a gRPC error' },
  { behaviour: 'wrong_reply', what: 'answers with replies that do not belong to the message' },
];

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`faults of the sidecar (${mode} mode): every login succeeds, byte for byte`, function () {
    this.timeout(60_000);
    let idp: TestIdp;
    let db: TestDatabase;
    let sidecarPort: number;
    let front: FaultEnvoy;
    const keys = generateKeySpec('k1');

    before(async () => {
      idp = await startTestIdp();
      db = await createTestDatabase(`faults_${mode}`);
      sidecarPort = await freePort();
      front = await startFaultEnvoy(mode, idp, sidecarPort);
    });
    after(async () => {
      await front?.stop();
      await idp?.close();
      await db?.drop();
    });

    const FAILED_OPEN = 'http.okta_ingress.ext_proc.token_tap.failure_mode_allowed';
    let failedOpenBefore = 0;
    beforeEach(async () => {
      failedOpenBefore = await envoyStat(front.envoy, FAILED_OPEN);
    });

    async function report(label: string, tally: LoginTally, extra = ''): Promise<void> {
      const failedOpen = (await envoyStat(front.envoy, FAILED_OPEN)) - failedOpenBefore;
      console.log(
        `      ${label} (${mode}): logins ok ${tally.ok}/${tally.total}, bytes unchanged ${tally.unchanged}/${tally.total}, slowest ${tally.slowestMs} ms; Envoy failure_mode_allowed ${failedOpen}${extra}`,
      );
    }

    function expectEveryLoginUnchanged(tally: LoginTally): void {
      expect(tally.failures).to.deep.equal([]);
      expect(tally.ok).to.equal(tally.total);
      expect(tally.unchanged).to.equal(tally.total);
    }

    it('the sidecar never started', async () => {
      const tally = await driveLogins(idp, front.tokenUrl, { count: 20 });
      await report('sidecar never started', tally);
      expectEveryLoginUnchanged(tally);
    });

    it('the sidecar is killed with SIGKILL mid-traffic', async () => {
      const sidecar = await startSidecarProcess({ port: sidecarPort, env: { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys } });
      await waitForSidecarHealth(front.envoy, true);
      let killedAt = 0;
      const tally = await driveLogins(idp, front.tokenUrl, {
        count: 60,
        onLogin: async (sofar) => {
          if (killedAt === 0 && sofar.ok >= 20) {
            killedAt = sofar.total;
            await sidecar.stop('SIGKILL');
          }
        },
      });
      await report('sidecar SIGKILLed mid-traffic', tally, `; killed after login ${killedAt}`);
      expect(killedAt).to.be.greaterThan(0);
      expectEveryLoginUnchanged(tally);
    });

    it('the sidecar stalls mid-traffic (SIGSTOP), past message_timeout, then resumes', async () => {
      const sidecar = await startSidecarProcess({ port: sidecarPort, env: { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys } });
      await waitForSidecarHealth(front.envoy, true);
      let stopped = false;
      try {
        const tally = await driveLogins(idp, front.tokenUrl, {
          count: 40,
          onLogin: (sofar) => {
            if (!stopped && sofar.ok >= 10) {
              stopped = true;
              process.kill(sidecar.pid, 'SIGSTOP');
            }
          },
        });
        const timeouts = await envoyStat(front.envoy, 'http.okta_ingress.ext_proc.token_tap.message_timeouts');
        await report('sidecar stalled (SIGSTOP)', tally, `; Envoy message_timeouts ${timeouts}`);
        expect(stopped).to.equal(true);
        expectEveryLoginUnchanged(tally);
        if (mode === 'buffered') expect(timeouts).to.be.greaterThan(0);
      } finally {
        process.kill(sidecar.pid, 'SIGCONT');
        await sidecar.stop('SIGKILL');
      }
      await waitForSidecarHealth(front.envoy, false);
    });

    for (const { behaviour, what } of BAD) {
      it(`an ext_proc server that ${what}`, async () => {
        const bad = await startBadExtProc(sidecarPort, behaviour);
        try {
          await waitForSidecarHealth(front.envoy, true);
          const tally = await driveLogins(idp, front.tokenUrl, { count: 20 });
          await report(`bad ext_proc: ${behaviour}`, tally, `; streams it was sent ${bad.streams}, messages ${bad.messages}`);
          expect(bad.streams, 'Envoy sent the bad server streams').to.be.greaterThan(0);
          expectEveryLoginUnchanged(tally);
        } finally {
          await bad.close();
        }
        await waitForSidecarHealth(front.envoy, false);
      });
    }
  });
}
