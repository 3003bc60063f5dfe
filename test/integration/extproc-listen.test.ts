// Issue 12 "Let no one in": ext_proc listens on loopback or a Unix socket unless told otherwise,
// and beyond loopback only with --allow-remote-extproc, said loudly at start.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import { EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess } from '../support/sidecar.js';

function health(address: string): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { check: Function };
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

  it('with --allow-remote-extproc it starts on 0.0.0.0 and warns at start (and TOKEN_TAP_ALLOW_REMOTE_EXTPROC=true does the same)', async () => {
    for (const [args, extra] of [[['--allow-remote-extproc'], {}], [[], { TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true' }]] as const) {
      const port = await freePort();
      const sidecar = await startSidecarProcess({ port, env: { ...env, ...extra }, listen: `0.0.0.0:${port}`, args: [...args] });
      try {
        const warning = sidecar.logs().split('\n').find((line) => line.includes('ext_proc listens beyond loopback'));
        expect(warning, 'warning logged').to.be.a('string');
        expect(JSON.parse(warning!)).to.include({ level: 40, listen: `0.0.0.0:${port}`, tls: 'none' });
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
});
