// Issue 12 "Let no one in": ext_proc listens on loopback or a Unix socket unless told otherwise,
// and beyond loopback only with --allow-remote-extproc and mTLS (or a second opt-in), said loudly at
// start. The Unix socket is never born wider than 0660, whatever the umask.
import { mkdtempSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import { EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';
import { startExtProcListener } from '../../src/extproc/listener.js';
import { checkBoundSocket } from '../../src/extproc/socket.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { memoryLogger } from '../support/memory-log.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess } from '../support/sidecar.js';

function health(address: string): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { check: (...args: any[]) => any };
  return new Promise((resolve, reject) =>
    client.check({ service: EXT_PROC_HEALTH_SERVICE }, { deadline: Date.now() + 2_000 }, (error: grpc.ServiceError | null, response?: { status: string }) => {
      client.close();
      if (error) reject(error);
      else resolve(response!.status);
    }),
  );
}

describe('ext_proc listen address (integration)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    db = await createTestDatabase('extproc_listen');
    env = { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_API_LISTEN: 'off', LOG_LEVEL: 'info' };
  });
  after(async () => db?.drop());

  for (const address of ['0.0.0.0', '[::]']) {
    it(`refuses to start on ${address} without --allow-remote-extproc, saying what to do`, async () => {
      const result = await runCli(['serve', '--listen', `${address}:${await freePort()}`], env);
      expect(result.code).to.equal(78);
      expect(result.stderr).to.contain('is reachable from other machines').and.contain('--allow-remote-extproc').and.contain('unix:/path');
      expect(result.stdout).to.not.contain('ext_proc server ready');
    });
  }

  it('TOKEN_TAP_LISTEN is held to the same rule', async () => {
    const result = await runCli(['serve'], { ...env, TOKEN_TAP_LISTEN: `0.0.0.0:${await freePort()}` });
    expect(result.code).to.equal(78);
    expect(result.stderr).to.contain('--allow-remote-extproc');
  });

  it('--allow-remote-extproc (or TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true) alone is refused: it needs mTLS or the explicit NetworkPolicy-only opt-in', async () => {
    for (const [args, extra] of [
      [['--allow-remote-extproc'], {}],
      [[], { TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true' }],
    ] as const) {
      const result = await runCli(['serve', '--listen', `0.0.0.0:${await freePort()}`, ...args], { ...env, ...extra });
      expect(result.code).to.equal(78);
      expect(result.stderr)
        .to.contain('needs mTLS to Envoy')
        .and.contain('TOKEN_TAP_EXTPROC_TLS_CLIENT_CA')
        .and.contain('TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true');
      expect(result.stdout).to.not.contain('ext_proc server ready');
    }
  });

  it('with --allow-remote-extproc and TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true it starts on 0.0.0.0 and warns at start (TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true the same)', async () => {
    const withoutMtls = { TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS: 'true' };
    for (const [args, extra] of [
      [['--allow-remote-extproc'], withoutMtls],
      [[], { ...withoutMtls, TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true' }],
    ] as const) {
      const port = await freePort();
      const sidecar = await startSidecarProcess({ port, env: { ...env, ...extra }, listen: `0.0.0.0:${port}`, args: [...args] });
      try {
        const warning = sidecar
          .logs()
          .split('\n')
          .find((line) => line.includes('ext_proc listens beyond loopback'));
        expect(warning, 'warning logged').to.be.a('string');
        expect(JSON.parse(warning!)).to.include({ level: 40, listen: `0.0.0.0:${port}`, tls: 'none' });
        expect(warning).to.contain('WITHOUT mTLS').and.contain('TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS');
        expect(await health(`127.0.0.1:${port}`)).to.equal('SERVING');
      } finally {
        await sidecar.stop();
      }
    }
  });

  it('listening on 127.0.0.1, it refuses a gRPC client on 127.0.0.2 (another address)', async () => {
    const port = await freePort();
    const sidecar = await startSidecarProcess({ port, env });
    try {
      expect(sidecar.logs()).to.not.contain('ext_proc listens beyond loopback');
      expect(await health(`127.0.0.1:${port}`)).to.equal('SERVING');
      const other = await health(`127.0.0.2:${port}`).then(
        () => 'served',
        (error: grpc.ServiceError) => error.code,
      );
      expect(other).to.equal(grpc.status.UNAVAILABLE);
    } finally {
      await sidecar.stop();
    }
  });

  describe('the Unix socket is 0660 from its first moment, whatever the umask', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-umask-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('bind(2) itself makes it 0660 under a umask of 0 (a listener that never chmods), and the umask is restored after', async () => {
      const socket = path.join(dir, 'bind-only.sock');
      const previous = process.umask(0);
      try {
        const thread = await startExtProcListener(
          { listen: `unix:${socket}`, maxBodyBytes: 1024 },
          { onResponse: () => undefined, logger: memoryLogger('info').logger, metrics: createMetrics(), checkSocket: () => undefined },
        );
        try {
          expect(statSync(socket).isSocket()).to.equal(true);
          expect((statSync(socket).mode & 0o777).toString(8), 'the socket as bind made it').to.equal('660');
          expect(process.umask(0), 'the umask is restored once bound').to.equal(0);
        } finally {
          await thread.close(500);
        }
      } finally {
        process.umask(previous);
      }
    });

    it('refuses to serve a socket path that is not the socket it bound (swapped for a symlink), and leaves the target alone', async () => {
      const socket = path.join(dir, 'swapped.sock');
      const target = path.join(dir, 'not-a-socket');
      writeFileSync(target, 'sidecar-owned file', { mode: 0o600 });
      let error: Error | undefined;
      try {
        const listener = await startExtProcListener(
          { listen: `unix:${socket}`, maxBodyBytes: 1024 },
          {
            onResponse: () => undefined,
            logger: memoryLogger('info').logger,
            metrics: createMetrics(),
            // Someone with write access to the directory swaps the socket between bind and the check.
            checkSocket: (bound) => {
              unlinkSync(bound);
              symlinkSync(target, bound);
              checkBoundSocket(bound);
            },
          },
        );
        await listener.close(100);
      } catch (caught) {
        error = caught as Error;
      }
      expect(error?.message).to.match(/not the socket just bound/);
      expect((statSync(target).mode & 0o777).toString(8), 'the target keeps its mode').to.equal('600');
    });

    it('a sidecar started with umask 000 serves its socket 0660 right after it is ready', async () => {
      const socket = path.join(dir, 'extproc.sock');
      // The child inherits the umask of the moment it is spawned (as `umask 000; exec node ...`).
      const previous = process.umask(0);
      let sidecar: Awaited<ReturnType<typeof startSidecarProcess>>;
      try {
        sidecar = await startSidecarProcess({ port: 0, env, listen: `unix:${socket}` });
      } finally {
        process.umask(previous);
      }
      try {
        expect(statSync(socket).isSocket()).to.equal(true);
        expect((statSync(socket).mode & 0o777).toString(8)).to.equal('660');
      } finally {
        await sidecar.stop();
      }
    });
  });
});
