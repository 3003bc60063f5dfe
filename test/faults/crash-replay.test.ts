// The sidecar is SIGKILLed right after captures reached the spool (fsynced, as the sidecar's own
// token_tap_spool_captures_total counts them). The next start replays the spool: every capture
// reaches Postgres exactly once, whether or not Postgres had it before the kill.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { parseKeyRing } from '../../src/keys/key-ring.js';
import { driveLogins, sidecarMetric, type SpoolRig, startSpoolRig, storedFingerprints, tallyFingerprints, unreachableDatabaseUrl } from '../support/faults.js';
import { waitFor } from '../support/ports.js';

describe('SIGKILL of the sidecar right after captures reached the spool', function () {
  this.timeout(60_000);
  let rig: SpoolRig;

  beforeEach(async () => {
    rig = await startSpoolRig('buffered', 'crash_replay');
  });
  afterEach(async () => rig?.close());

  /** Logs in `count` times and SIGKILLs the sidecar the moment its spool has fsynced `count` captures. */
  async function loginsThenKill(count: number): Promise<{ accessTokens: string[]; ok: number; total: number; spooled: number }> {
    const running = rig.sidecar!;
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count });
    const spooled = await waitFor(
      `${count} captures fsynced in the spool`,
      async () => {
        const appended = await sidecarMetric(running.opsPort, 'token_tap_spool_captures_total');
        return appended >= count ? appended : undefined;
      },
      10_000,
      2,
    );
    await rig.stopSidecar('SIGKILL');
    return { ...tally, spooled };
  }

  async function restartAndCount(expected: number): Promise<{ replayed: number; fingerprints: string[] }> {
    const restarted = await rig.start(rig.db.url);
    const replayed = Number(/"captures":(\d+)[^\n]*replaying them to Postgres/.exec(restarted.logs())?.[1] ?? 0);
    await waitFor(
      'the replayed captures in Postgres',
      async () =>
        (await storedFingerprints(rig.db.pool)).length >= expected && (await sidecarMetric(restarted.opsPort, 'token_tap_capture_queue_depth')) === 0
          ? true
          : undefined,
      20_000,
    );
    return { replayed, fingerprints: await storedFingerprints(rig.db.pool) };
  }

  it('with Postgres away at the time: after the restart, all of them reach Postgres exactly once', async () => {
    await rig.start(await unreachableDatabaseUrl());
    const killed = await loginsThenKill(30);
    const before = (await storedFingerprints(rig.db.pool)).length;
    const { replayed, fingerprints } = await restartAndCount(killed.ok);
    const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(rig.keys), killed.accessTokens, fingerprints);
    console.log(
      `      Postgres away, SIGKILL after ${killed.spooled} captures fsynced: logins ok ${killed.ok}/${killed.total}; in Postgres before the restart ${before}/${killed.ok}, ` +
        `replayed ${replayed}, after the restart stored ${stored}/${killed.ok}, duplicated ${duplicated}, missing ${missing}, events ${fingerprints.length}`,
    );
    expect(killed.ok).to.equal(killed.total);
    expect(before).to.equal(0);
    expect(replayed).to.equal(killed.ok);
    expect({ stored, duplicated, missing, events: fingerprints.length }).to.deep.equal({ stored: killed.ok, duplicated: 0, missing: 0, events: killed.ok });
  });

  it('restarted at once on the same spool while the killed one is not reaped yet: it starts, replays, and loses none', async () => {
    // The killed sidecar stays a zombie (its parent does not reap it), so its PID still "exists".
    await rig.start(await unreachableDatabaseUrl(), {}, { unreaped: true });
    const killedPid = rig.sidecar!.pid;
    const killed = await loginsThenKill(30);
    const state = () => /^\d+ \(.*\) (\S)/.exec(readFileSync(`/proc/${killedPid}/stat`, 'utf8'))?.[1];
    const killedState = await waitFor('the killed sidecar to be dead', async () => (state() === 'Z' ? 'Z' : undefined), 5_000, 1);
    const restartedAt = Date.now();
    const { replayed, fingerprints } = await restartAndCount(killed.ok);
    const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(rig.keys), killed.accessTokens, fingerprints);
    console.log(
      `      SIGKILL after ${killed.spooled} captures fsynced, restarted at once (killed pid ${killedPid} state ${killedState} at the restart, still ${state()} after it): ` +
        `ready and healthy in ${Date.now() - restartedAt} ms incl. replay; logins ok ${killed.ok}/${killed.total}, replayed ${replayed}, stored ${stored}/${killed.ok}, duplicated ${duplicated}, missing ${missing}`,
    );
    expect(killedState).to.equal('Z');
    expect(killed.ok).to.equal(killed.total);
    expect(replayed).to.equal(killed.ok);
    expect({ stored, duplicated, missing }).to.deep.equal({ stored: killed.ok, duplicated: 0, missing: 0 });
  });

  it('while the writer is moving them into Postgres: after the restart, each is there exactly once', async () => {
    await rig.start(rig.db.url);
    const killed = await loginsThenKill(40);
    const before = (await storedFingerprints(rig.db.pool)).length;
    const { replayed, fingerprints } = await restartAndCount(killed.ok);
    const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(rig.keys), killed.accessTokens, fingerprints);
    console.log(
      `      Postgres up, SIGKILL after ${killed.spooled} captures fsynced: logins ok ${killed.ok}/${killed.total}; in Postgres before the restart ${before}/${killed.ok}, ` +
        `replayed ${replayed} (${Math.max(0, replayed - (killed.ok - before))} of them already in Postgres), after the restart stored ${stored}/${killed.ok}, duplicated ${duplicated}, missing ${missing}, events ${fingerprints.length}`,
    );
    expect(killed.ok).to.equal(killed.total);
    expect({ stored, duplicated, missing, events: fingerprints.length }).to.deep.equal({ stored: killed.ok, duplicated: 0, missing: 0, events: killed.ok });
  });
});
