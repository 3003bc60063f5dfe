// One sidecar per spool directory, held by an OS file lock: a second live sidecar on the directory
// is refused with a message naming the holder (also from another network namespace, where an
// abstract socket would not be seen), and of two started at the same moment exactly one runs.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { segmentRecords } from '../../src/ingest/spool-codec.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { connectExtProc, openStream } from '../support/extproc-client.js';
import { unreachableDatabaseUrl } from '../support/faults.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase } from '../support/postgres.js';
import { IN_NEW_NETNS, startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

/** The spool's segments as they are on disk: name → bytes. */
function segmentsOnDisk(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).filter((name) => name.endsWith('.seg')).sort().map((name) => [name, readFileSync(path.join(dir, name))]));
}

/** Plays Envoy: one complete token response on its own ext_proc stream. */
async function sendResponse(address: string, accessToken: string): Promise<void> {
  const client = connectExtProc(address);
  const call = openStream(client, 'acme');
  call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } }, observability_mode: true });
  call.write({ response_body: { body: Buffer.from(JSON.stringify({ access_token: accessToken, token_type: 'Bearer' })), end_of_stream: true }, observability_mode: true });
  call.end();
  await once(call, 'status');
  client.close();
}

describe('spool directory lock (real sidecar processes)', function () {
  this.timeout(60_000);
  let spoolDir: string;
  const running: SidecarProcess[] = [];

  beforeEach(() => {
    spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-lock-'));
  });
  afterEach(async () => {
    for (const sidecar of running.splice(0)) await sidecar.stop('SIGKILL');
    rmSync(spoolDir, { recursive: true, force: true });
  });

  async function start(): Promise<SidecarProcess> {
    // Postgres is not needed to take the lock and serve ext_proc; the API stays off (no fixed port).
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: { DATABASE_URL: await unreachableDatabaseUrl(), TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_SPOOL_DIR: spoolDir, TOKEN_TAP_API_LISTEN: 'off' },
    });
    running.push(sidecar);
    return sidecar;
  }

  it('refuses a second live sidecar on the directory, naming the holder', async () => {
    const first = await start();
    const started = Date.now();
    const refusal = await start().then(
      () => '(started)',
      (error: Error) => error.message,
    );
    const line = /token-tap: (the spool directory .*)/.exec(refusal)?.[1];
    console.log(`      second sidecar refused in ${Date.now() - started} ms: "${line}"`);
    expect(refusal).to.match(/exited with 1/);
    expect(line).to.match(
      new RegExp(
        `^the spool directory ${spoolDir} is in use by another live token-tap \\(pid ${first.pid} on host ${os.hostname()}, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, writer [0-9a-f]{16}\\): give each sidecar its own TOKEN_TAP_SPOOL_DIR$`,
      ),
    );
  });

  it('of two sidecars started at the same moment, exactly one runs (also over a stale lock file)', async () => {
    const rounds: string[] = [];
    for (let round = 0; round < 3; round += 1) {
      // A lock file left by a process that is gone: both starters see it, and only one may win.
      const gone = spawn('true');
      await new Promise((resolve) => gone.once('exit', resolve));
      writeFileSync(path.join(spoolDir, 'lock'), `${gone.pid}\n`);
      const outcomes = await Promise.allSettled([start(), start()]);
      const ran = outcomes.filter((outcome) => outcome.status === 'fulfilled').length;
      const refused = outcomes.filter((outcome) => outcome.status === 'rejected' && /is in use by another live token-tap \(pid \d+ on host /.test(String(outcome.reason))).length;
      rounds.push(`round ${round + 1}: ran ${ran}, refused ${refused}`);
      expect({ ran, refused }, rounds.join('; ')).to.deep.equal({ ran: 1, refused: 1 });
      for (const sidecar of running.splice(0)) await sidecar.stop('SIGKILL');
    }
    console.log(`      ${rounds.join('; ')}`);
  });

  it('refuses a second sidecar in another network namespace, naming the holder, and no segment of the first is deleted', async () => {
    // Each sidecar in a network namespace of its own: no abstract socket, no loopback shared. ext_proc
    // on a Unix socket (reachable by path), Postgres for the second through its Unix socket.
    const sockets = mkdtempSync(path.join(os.tmpdir(), 'token-tap-netns-'));
    const db = await createTestDatabase('spool_netns');
    const keys = generateKeySpec('k1');
    const startIn = async (name: string, databaseUrl: string) => {
      const sidecar = await startSidecarProcess({
        port: 0,
        listen: `unix:${path.join(sockets, `${name}.sock`)}`,
        wrap: IN_NEW_NETNS,
        env: { DATABASE_URL: databaseUrl, TOKEN_TAP_KEYS: keys, TOKEN_TAP_SPOOL_DIR: spoolDir, TOKEN_TAP_API_LISTEN: 'off' },
      });
      running.push(sidecar);
      return sidecar;
    };
    try {
      // The first cannot reach Postgres (127.0.0.1 of its own namespace): what it captures stays in its spool.
      const first = await startIn('first', await unreachableDatabaseUrl());
      for (let index = 0; index < 5; index += 1) await sendResponse(`unix:${path.join(sockets, 'first.sock')}`, `at-netns-${index}`);
      const spooled = await waitFor('5 captures in the first sidecar\'s spool', async () => {
        const segments = segmentsOnDisk(spoolDir);
        return [...segments.values()].reduce((sum, bytes) => sum + segmentRecords(bytes).length, 0) >= 5 ? segments : undefined;
      });

      // The second could write them to Postgres, and would delete them once it had.
      const socketUrl = `postgres://postgres@/${db.name}?host=/var/run/postgresql`;
      let second: SidecarProcess | undefined;
      const refusal = await startIn('second', socketUrl).then(
        (started) => {
          second = started;
          return '(started)';
        },
        (error: Error) => error.message,
      );
      // Started (the lock did not hold): give it the time to replay and trim the first one's spool.
      if (second) await waitFor('the second sidecar to write the first one\'s captures', async () => (/capture recorded/.test(second!.logs()) ? true : undefined), 10_000).catch(() => undefined);
      const line = /token-tap: (the spool directory .*)/.exec(refusal)?.[1] ?? refusal.split('\n')[0];
      const after = segmentsOnDisk(spoolDir);
      const kept = [...spooled].filter(([name, bytes]) => after.get(name)?.subarray(0, bytes.length).equals(bytes)).length;
      console.log(`      first sidecar pid ${first.pid}, ${spooled.size} segment(s) with 5 captures; second in another network namespace: "${line}"; segments of the first still there ${kept}/${spooled.size}`);
      expect(refusal).to.match(/exited with 1/);
      expect(line).to.match(new RegExp(`in use by another live token-tap \\(pid ${first.pid} on host ${os.hostname()}, since .*, writer [0-9a-f]{16}\\)`));
      expect(kept).to.equal(spooled.size);
      const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events').catch(() => ({ rows: [{ n: 0 }] }));
      expect(rows[0]!.n).to.equal(0);
    } finally {
      for (const sidecar of running.splice(0)) await sidecar.stop('SIGKILL');
      await db.drop();
      rmSync(sockets, { recursive: true, force: true });
    }
  });
});
