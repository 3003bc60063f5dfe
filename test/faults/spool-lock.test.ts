// One sidecar per spool directory, held by an OS file lock: a second live sidecar on the directory
// is refused with a message naming the holder (also from another network namespace, where an
// abstract socket would not be seen), and of two started at the same moment exactly one runs.
// The flock(1) process holding it killed: the sidecar takes it again at once, or, when another
// process took it meanwhile, stops capturing and exits 1.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { segmentRecords } from '../../src/ingest/spool-codec.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { connectExtProc, openStream } from '../support/extproc-client.js';
import { sidecarMetric, unreachableDatabaseUrl } from '../support/faults.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase } from '../support/postgres.js';
import { IN_NEW_NETNS, startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

/** The spool's segments as they are on disk: name → bytes. */
function segmentsOnDisk(dir: string): Map<string, Buffer> {
  return new Map(
    readdirSync(dir)
      .filter((name) => name.endsWith('.seg'))
      .sort()
      .map((name) => [name, readFileSync(path.join(dir, name))]),
  );
}

/** The processes whose parent is `pid`, with their command names (from /proc). */
function childrenOf(pid: number): Array<{ pid: number; comm: string }> {
  const children: Array<{ pid: number; comm: string }> = [];
  for (const entry of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const end = stat.lastIndexOf(')');
    if (Number(stat.slice(end + 2).split(' ')[1]) === pid) children.push({ pid: Number(entry), comm: stat.slice(stat.indexOf('(') + 1, end) });
  }
  return children;
}

/** The sidecar's flock(1) child once it holds the lock (it runs its `cat` only then). */
function lockHolderOf(pid: number): number | undefined {
  return childrenOf(pid).find((child) => child.comm === 'flock' && childrenOf(child.pid).some((grandchild) => grandchild.comm === 'cat'))?.pid;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function healthz(sidecar: SidecarProcess): Promise<number | 'down'> {
  return fetch(`http://127.0.0.1:${sidecar.opsPort}/healthz`).then(
    (response) => response.status,
    () => 'down' as const,
  );
}

/** Plays Envoy: one complete token response on its own ext_proc stream. */
async function sendResponse(address: string, accessToken: string): Promise<void> {
  const client = connectExtProc(address);
  const call = openStream(client, 'acme');
  call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } }, observability_mode: true });
  call.write({
    response_body: { body: Buffer.from(JSON.stringify({ access_token: accessToken, token_type: 'Bearer' })), end_of_stream: true },
    observability_mode: true,
  });
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

  async function start(env: Record<string, string> = {}): Promise<SidecarProcess> {
    // Postgres is not needed to take the lock and serve ext_proc; the API stays off (no fixed port).
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: {
        DATABASE_URL: await unreachableDatabaseUrl(),
        TOKEN_TAP_KEYS: generateKeySpec('k1'),
        TOKEN_TAP_SPOOL_DIR: spoolDir,
        TOKEN_TAP_API_LISTEN: 'off',
        ...env,
      },
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
      const refused = outcomes.filter(
        (outcome) => outcome.status === 'rejected' && /is in use by another live token-tap \(pid \d+ on host /.test(String(outcome.reason)),
      ).length;
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
      const spooled = await waitFor("5 captures in the first sidecar's spool", async () => {
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
      if (second)
        await waitFor(
          "the second sidecar to write the first one's captures",
          async () => (/captures? recorded/.test(second!.logs()) ? true : undefined),
          10_000,
        ).catch(() => undefined);
      const line = /token-tap: (the spool directory .*)/.exec(refusal)?.[1] ?? refusal.split('\n')[0];
      const after = segmentsOnDisk(spoolDir);
      const kept = [...spooled].filter(([name, bytes]) => after.get(name)?.subarray(0, bytes.length).equals(bytes)).length;
      console.log(
        `      first sidecar pid ${first.pid}, ${spooled.size} segment(s) with 5 captures; second in another network namespace: "${line}"; segments of the first still there ${kept}/${spooled.size}`,
      );
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

  it('takes the lock again at once each time its flock(1) is killed: the same sidecar holds it and keeps capturing, and a second sidecar is refused', async () => {
    const first = await start();
    const writer = (JSON.parse(readFileSync(path.join(spoolDir, 'holder.json'), 'utf8')) as { id: string }).id;
    let holder = await waitFor("the first sidecar's flock(1)", async () => lockHolderOf(first.pid));
    const rounds = 60;
    let captured = 0;
    for (let round = 1; round <= rounds; round += 1) {
      process.kill(holder, 'SIGKILL');
      // Nobody else wants the lock: it must be this sidecar's again, by a new flock(1) (or the sidecar has stopped, which fails here too).
      const again = await waitFor(
        `round ${round}: the lock held again by the first sidecar`,
        async () => {
          const next = lockHolderOf(first.pid);
          return next !== undefined && next !== holder ? next : undefined;
        },
        5_000,
        10,
      );
      // Held indeed (our own flock(1) is refused), and holder.json still names the first one's run.
      expect(spawnSync('flock', ['--nonblock', path.join(spoolDir, 'lock'), 'true']).status, `round ${round}: the lock is taken`).to.equal(1);
      expect((JSON.parse(readFileSync(path.join(spoolDir, 'holder.json'), 'utf8')) as { id: string }).id).to.equal(writer);
      holder = again;
      if (round % 10 === 0) {
        await sendResponse(`127.0.0.1:${first.port}`, `at-retake-${round}`);
        captured += 1;
        await waitFor(
          `round ${round}: the capture spooled`,
          async () => ((await sidecarMetric(first.opsPort, 'token_tap_spool_captures_total')) >= captured ? true : undefined),
          5_000,
        );
      }
    }
    expect(await healthz(first)).to.equal(200);
    const refusal = await start().then(
      () => '(started)',
      (error: Error) => error.message,
    );
    console.log(
      `      flock(1) killed ${rounds} times: taken again by the same sidecar each time, ${captured}/${captured} captures spooled meanwhile; a second sidecar: "${/in use by another live token-tap \(pid \d+/.exec(refusal)?.[0] ?? refusal.split('\n')[0]}"`,
    );
    expect(refusal).to.match(new RegExp(`in use by another live token-tap \\(pid ${first.pid} `));
    expect(first.logs()).to.not.contain('no longer this sidecar');
  });

  it('stops capturing, turns unhealthy and exits 1 when another process took the lock it lost; nothing of its spool is deleted, and a second sidecar opens only after it stopped', async () => {
    const first = await start({ TOKEN_TAP_SHUTDOWN_GRACE_MS: '1000' });
    for (let index = 0; index < 3; index += 1) await sendResponse(`127.0.0.1:${first.port}`, `at-before-${index}`);
    const spooled = await waitFor("3 captures in the first sidecar's spool", async () => {
      const segments = segmentsOnDisk(spoolDir);
      return [...segments.values()].reduce((sum, bytes) => sum + segmentRecords(bytes).length, 0) >= 3 ? segments : undefined;
    });
    // Another process waits for the lock (blocking): the kernel hands it over the moment it is free.
    const waiter: ChildProcess = spawn('flock', ['--exclusive', path.join(spoolDir, 'lock'), 'sleep', '600'], { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const holder = await waitFor("the first sidecar's flock(1)", async () => lockHolderOf(first.pid));
      const killedAt = Date.now();
      process.kill(holder, 'SIGKILL');
      await waitFor('the waiter to hold the lock', async () => (childrenOf(waiter.pid!).some((child) => child.comm === 'sleep') ? true : undefined), 5_000, 10);
      // A login now is not taken for good: the first one stops.
      await sendResponse(`127.0.0.1:${first.port}`, 'at-after').catch(() => undefined);
      let sawUnhealthy = 200 as number | 'down';
      await waitFor(
        'the first sidecar to exit',
        async () => {
          const status = await healthz(first);
          if (status !== 200 && sawUnhealthy !== 503) sawUnhealthy = status;
          return alive(first.pid) ? undefined : true;
        },
        15_000,
        20,
      );
      const code = await first.stop();
      const stoppedIn = Date.now() - killedAt;
      const logs = first.logs();
      // The second sidecar: refused while the other process holds the lock, opens once it has let go.
      const refused = await start().then(
        () => '(started)',
        (error: Error) => error.message,
      );
      process.kill(-waiter.pid!, 'SIGKILL');
      await new Promise((resolve) => waiter.once('exit', resolve));
      const second = await start();
      const kept = [...spooled].filter(([name, bytes]) => readFileSync(path.join(spoolDir, name)).subarray(0, bytes.length).equals(bytes)).length;
      console.log(
        `      lock taken by another process after its flock(1) was killed: the first sidecar answered /healthz ${sawUnhealthy} and exited ${code} ${stoppedIn} ms later; ` +
          `captures dropped as spool_stopped ${(logs.match(/"reason":"spool_stopped"/g) ?? []).length}; segments of the first kept ${kept}/${spooled.size}; second sidecar started after it ${second.pid > 0}`,
      );
      expect(code).to.equal(1);
      expect(sawUnhealthy === 503 || sawUnhealthy === 'down').to.equal(true);
      expect(logs).to.contain("the spool directory is no longer this sidecar's alone").and.contain('stopping: the sidecar cannot go on');
      expect(logs).to.contain('"reason":"spool_stopped"');
      expect(refused).to.match(/exited with 1/);
      expect(kept).to.equal(spooled.size);
      expect(second.logs()).to.match(/"captures":3[^\n]*replaying them to Postgres/);
    } finally {
      if (waiter.exitCode === null && waiter.signalCode === null) process.kill(-waiter.pid!, 'SIGKILL');
    }
  });
});
