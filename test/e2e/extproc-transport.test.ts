// Issue 12: Envoy reaches the sidecar on a Unix socket (what we ship), or beyond loopback only with
// mTLS (shown here on loopback: tests never use other addresses); in both a real login through the
// real Envoy is captured.
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import { EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';
import { createTestCa, type TestCa } from '../support/certificates.js';
import { loginAsOkta } from '../support/okta-client.js';
import { waitFor } from '../support/ports.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

/** Waits for the `count`th capture of `subject` and returns its outcome. */
async function capturedOutcome(stack: Stack, subject: string, count = 1): Promise<string> {
  return waitFor(`capture ${count} of ${subject}`, async () => {
    const { rows } = await stack.db.pool.query<{ outcome: string }>('SELECT outcome FROM capture_events WHERE idp = $1 AND subject = $2 ORDER BY id', [
      IDP_NAME,
      subject,
    ]);
    return rows[count - 1]?.outcome;
  });
}

function healthCheck(address: string, credentials: grpc.ChannelCredentials): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
  const client = new Client(address, credentials) as unknown as grpc.Client & { check: (...args: any[]) => any };
  return new Promise<string>((resolve, reject) => {
    client.check({ service: EXT_PROC_HEALTH_SERVICE }, { deadline: Date.now() + 3_000 }, (error: grpc.ServiceError | null, response?: { status: string }) => {
      client.close();
      if (error) reject(error);
      else resolve(response!.status);
    });
  });
}

describe('end to end: Envoy to the sidecar on a Unix socket', function () {
  this.timeout(60_000);
  let stack: Stack;
  let socket: string;

  before(async () => {
    socket = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-sock-')), 'extproc.sock');
    stack = await startStack('observability', { label: 'e2e_socket', sidecarSocket: socket });
  });
  after(async () => stack?.stop());

  it('captures a login relayed by Envoy over the socket, which only owner and group may open', async () => {
    const login = await loginAsOkta(stack.idp, stack.tokenUrl);
    expect(await capturedOutcome(stack, login.claims.sub as string)).to.equal('stored');
    const stats = statSync(socket);
    expect(stats.isSocket()).to.equal(true);
    expect(stats.mode & 0o777).to.equal(0o660);
    expect(stack.sidecar!.logs()).to.contain(`"listen":"unix:${socket}"`);
    const ready = (await (await fetch(`http://127.0.0.1:${stack.sidecar!.opsPort}/readyz`)).json()) as { extProc: { listen: string } };
    expect(ready.extProc).to.deep.equal({ listen: `unix:${socket}`, tls: 'none' });
    // Envoy dialled the socket: no TCP sidecar port anywhere in its config.
    const stats2 = await stack.envoy.stats();
    expect(stats2.get('cluster.token_tap_sidecar.upstream_cx_total') ?? 0).to.be.greaterThan(0);
  });

  it('starts again over the socket file a killed sidecar left behind, and captures', async () => {
    await stack.sidecar!.stop('SIGKILL');
    expect(statSync(socket).isSocket(), 'the killed sidecar left its socket').to.equal(true);
    await stack.restartSidecar();
    await waitFor('Envoy to see the sidecar healthy again', async () =>
      (await stack.envoy.stats()).get('cluster.token_tap_sidecar.membership_healthy') === 1 ? true : undefined,
    );
    const login = await loginAsOkta(stack.idp, stack.tokenUrl);
    expect(await capturedOutcome(stack, login.claims.sub as string, 2)).to.equal('stored');
  });
});

describe('end to end: Envoy to the sidecar with mTLS (as --allow-remote-extproc deployments must)', function () {
  this.timeout(60_000);
  let stack: Stack;
  let ca: TestCa;
  let envoyClient: ReturnType<TestCa['issue']>;

  before(async () => {
    ca = createTestCa();
    const server = ca.issue('token-tap sidecar', 'IP:127.0.0.1');
    envoyClient = ca.issue('envoy');
    stack = await startStack('buffered', {
      label: 'e2e_mtls',
      sidecarTls: { certFile: envoyClient.certFile, keyFile: envoyClient.keyFile, caFile: ca.caFile },
      sidecarEnv: { TOKEN_TAP_EXTPROC_TLS_CERT: server.certFile, TOKEN_TAP_EXTPROC_TLS_KEY: server.keyFile, TOKEN_TAP_EXTPROC_TLS_CLIENT_CA: ca.caFile },
    });
  });
  after(async () => stack?.stop());

  it('captures a login: Envoy presents its client certificate to the sidecar', async () => {
    const login = await loginAsOkta(stack.idp, stack.tokenUrl);
    expect(await capturedOutcome(stack, login.claims.sub as string)).to.equal('stored');
    const stats = await stack.envoy.stats();
    expect(stats.get('cluster.token_tap_sidecar.ssl.handshake') ?? 0).to.be.greaterThan(0);
    expect(stats.get('http.okta_ingress.ext_proc.token_tap.failure_mode_allowed') ?? 0, 'no stream failed open').to.equal(0);
  });

  it('refuses a client without a certificate, and plaintext; serves one with a certificate from the CA', async () => {
    const address = `127.0.0.1:${stack.sidecar!.port}`;
    const noCertificate = await healthCheck(address, grpc.credentials.createSsl(ca.ca)).then(
      () => 'served',
      (error: grpc.ServiceError) => error.code,
    );
    expect(noCertificate).to.equal(grpc.status.UNAVAILABLE);
    const plaintext = await healthCheck(address, grpc.credentials.createInsecure()).then(
      () => 'served',
      (error: grpc.ServiceError) => error.code,
    );
    expect(plaintext).to.equal(grpc.status.UNAVAILABLE);
    const other = createTestCa().issue('not from our CA');
    const wrongCa = await healthCheck(address, grpc.credentials.createSsl(ca.ca, other.key, other.cert)).then(
      () => 'served',
      (error: grpc.ServiceError) => error.code,
    );
    expect(wrongCa).to.equal(grpc.status.UNAVAILABLE);
    expect(await healthCheck(address, grpc.credentials.createSsl(ca.ca, envoyClient.key, envoyClient.cert))).to.equal('SERVING');
  });
});
