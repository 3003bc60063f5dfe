// SIGTERM: the sidecar stops taking streams, lets open ones finish, writes the spool to Postgres
// within TOKEN_TAP_SHUTDOWN_GRACE_MS and exits 0; what Postgres could not take stays in the spool.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { MIGRATION_LOCK_ID } from '../../src/store/migrate.js';
import { parseKeyRing } from '../../src/keys/key-ring.js';
import { driveLogins, sidecarMetric, type SpoolRig, startSpoolRig, storedFingerprints, tallyFingerprints, unreachableDatabaseUrl } from '../support/faults.js';
import { waitFor } from '../support/ports.js';

describe('graceful stop on SIGTERM', function () {
  this.timeout(60_000);
  let rig: SpoolRig;

  beforeEach(async () => {
    rig = await startSpoolRig('observability', 'graceful');
  });
  afterEach(async () => rig?.close());

  const start = (databaseUrl: string, graceMs: number) => rig.start(databaseUrl, { TOKEN_TAP_SHUTDOWN_GRACE_MS: String(graceMs) });

  const segments = () => readdirSync(rig.spoolDir).filter((name) => name.endsWith('.seg'));
  /** Segments left that the checkpoint does not name as wholly in Postgres (those it does are kept for the grace window). */
  const unconfirmed = () => {
    const { segments: marks } = JSON.parse(readFileSync(path.join(rig.spoolDir, 'checkpoint.json'), 'utf8')) as {
      segments: Record<string, { offset: number }>;
    };
    return segments().filter((name) => !(marks[name] && marks[name]!.offset >= statSync(path.join(rig.spoolDir, name)).size));
  };

  const fingerprints = () => storedFingerprints(rig.db.pool);

  it('with logins in flight: the captures it took are all in Postgres, nothing in the spool waits for Postgres, and it exits 0', async () => {
    const running = await start(rig.db.url, 10_000);
    let stopping: Promise<number | null> | undefined;
    let stoppedAfter = 0;
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, {
      count: 60,
      onLogin: (sofar) => {
        if (!stopping && sofar.ok >= 20) {
          stoppedAfter = sofar.total;
          stopping = rig.stopSidecar('SIGTERM');
        }
      },
    });
    const started = Date.now();
    const code = await stopping!;
    // The info lines of counts ("captures recorded"; the line per capture is debug).
    const recorded = [...running.logs().matchAll(/"captures":(\d+)[^\n]*"msg":"captures recorded"/g)].reduce((sum, match) => sum + Number(match[1]), 0);
    const stored = await fingerprints();
    const { duplicated } = tallyFingerprints(parseKeyRing(rig.keys), tally.accessTokens, stored);
    console.log(
      `      SIGTERM after login ${stoppedAfter}: logins ok ${tally.ok}/${tally.total}, bytes unchanged ${tally.unchanged}/${tally.total}; exit code ${code} ` +
        `${Date.now() - started} ms after the last login; captures it recorded ${recorded}, in Postgres ${stored.length}, duplicated ${duplicated}, ` +
        `spool segments left ${segments().length} (kept for the grace window), not yet in Postgres ${unconfirmed().length}`,
    );
    expect(code).to.equal(0);
    expect(tally.ok).to.equal(tally.total);
    expect(tally.unchanged).to.equal(tally.total);
    expect(running.logs()).to.contain('every capture is in Postgres');
    expect(stored.length)
      .to.be.at.least(stoppedAfter - 4)
      .and.equal(recorded);
    expect(duplicated).to.equal(0);
    // Nothing waits for Postgres; what is left is already there, kept for TOKEN_TAP_SPOOL_GRACE_SECONDS.
    expect(unconfirmed()).to.deep.equal([]);
  });

  it('SIGTERM while the start still waits on the schema migration: stops once the start is done, exits 0, keeps every capture', async () => {
    // The test holds the migrations' advisory lock, so the sidecar's start blocks in migrate while ext_proc is served.
    const holder = new pg.Client({ connectionString: rig.db.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
      const running = await start(rig.db.url, 10_000);
      await waitFor('the sidecar to wait on the migration lock', async () => {
        const { rows } = await rig.db.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        return rows[0]!.n > 0 ? true : undefined;
      });
      const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 10 });
      await waitFor('the captures in the spool', async () =>
        (await sidecarMetric(running.opsPort, 'token_tap_spool_captures_total')) >= tally.ok ? true : undefined,
      );
      const exited = rig.stopSidecar('SIGTERM');
      const meanwhile = await Promise.race([exited.then((code) => `exited ${code}`), new Promise((resolve) => setTimeout(() => resolve('running'), 1_000))]);
      const released = Date.now();
      await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
      const code = await exited;
      const stopMs = Date.now() - released;
      const stored = tallyFingerprints(parseKeyRing(rig.keys), tally.accessTokens, await fingerprints());
      console.log(
        `      SIGTERM during the migration: 1 s later ${meanwhile}; after the lock was released, exit code ${code} in ${stopMs} ms; ` +
          `logins ok ${tally.ok}/${tally.total}, in Postgres ${stored.stored}/${tally.ok}, duplicated ${stored.duplicated}, spool segments left ${segments().length}`,
      );
      expect(meanwhile).to.equal('running');
      expect(code).to.equal(0);
      expect(running.logs()).to.contain('stopping once the start is done').and.contain('every capture is in Postgres');
      expect(tally.ok).to.equal(tally.total);
      expect(stored).to.deep.equal({ stored: tally.ok, duplicated: 0, missing: 0 });
    } finally {
      await holder.end();
    }
  });

  it('with Postgres away: exits 0 within the grace period, and the next start writes what the spool kept', async () => {
    const running = await start(await unreachableDatabaseUrl(), 2_000);
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 10 });
    // Observability mode: Envoy may still be sending the last response when the login is done.
    await waitFor('the captures in the spool', async () =>
      (await sidecarMetric(running.opsPort, 'token_tap_spool_captures_total')) >= tally.ok ? true : undefined,
    );
    const stopAsked = Date.now();
    const code = await rig.stopSidecar('SIGTERM');
    const stopMs = Date.now() - stopAsked;
    const left = segments();
    await start(rig.db.url, 2_000);
    await waitFor('the kept captures in Postgres', async () => ((await fingerprints()).length >= tally.ok ? true : undefined), 20_000);
    const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(rig.keys), tally.accessTokens, await fingerprints());
    console.log(
      `      SIGTERM with Postgres away (grace 2000 ms): exit code ${code} after ${stopMs} ms, spool segments kept ${left.length}; ` +
        `after the next start stored ${stored}/${tally.ok}, duplicated ${duplicated}, missing ${missing}`,
    );
    expect(code).to.equal(0);
    expect(stopMs).to.be.below(4_000);
    expect(running.logs()).to.contain('the rest stays in the spool for the next start');
    expect(left.length).to.be.greaterThan(0);
    expect({ stored, duplicated, missing }).to.deep.equal({ stored: tally.ok, duplicated: 0, missing: 0 });
  });
});
