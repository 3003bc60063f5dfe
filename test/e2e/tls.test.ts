// Okta requires https: the Okta-shaped flow over Envoy's TLS listener (a certificate the test makes),
// on HTTP/1.1 and on HTTP/2.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loginAsOkta } from '../support/okta-client.js';
import { waitFor } from '../support/ports.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

function selfSignedCertificate(): { certFile: string; keyFile: string; pem: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-tls-'));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=token-tap test',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { certFile, keyFile, pem: readFileSync(certFile, 'utf8') };
}

describe('end to end over TLS (Envoy https listener)', function () {
  this.timeout(60_000);
  let stack: Stack;
  let certificate: ReturnType<typeof selfSignedCertificate>;

  before(async () => {
    certificate = selfSignedCertificate();
    stack = await startStack('observability', { label: 'tls', tls: { certFile: certificate.certFile, keyFile: certificate.keyFile } });
  });
  after(async () => stack?.stop());

  it('completes the code flow over https (HTTP/1.1) and captures the grant', async () => {
    expect(stack.tokenUrl).to.match(/^https:/);
    const login = await loginAsOkta(stack.idp, stack.tokenUrl, { tokenEndpointCa: certificate.pem });
    const sent = stack.idp.tokenResponses.at(-1)!;
    expect(login.received.body.equals(sent.body)).to.equal(true);
    const { rows } = await waitFor('the capture', async () => {
      const result = await stack.db.pool.query('SELECT idp, outcome FROM capture_events WHERE subject = $1', [login.claims.sub]);
      return result.rows.length > 0 ? result : undefined;
    });
    expect(rows).to.deep.equal([{ idp: IDP_NAME, outcome: 'stored' }]);
  });

  it('negotiates HTTP/2 by ALPN with TLS 1.2 or newer', async () => {
    const session = http2.connect(new URL(stack.tokenUrl).origin, { ca: certificate.pem });
    try {
      const { status, protocol } = await new Promise<{ status: number; protocol: string }>((resolve, reject) => {
        const request = session.request({ ':method': 'POST', ':path': new URL(stack.tokenUrl).pathname, 'content-type': 'application/x-www-form-urlencoded' });
        request.on('response', (headers) => {
          request.resume();
          request.on('end', () =>
            resolve({ status: Number(headers[':status']), protocol: (session.socket as import('node:tls').TLSSocket).getProtocol() ?? '' }),
          );
        });
        request.on('error', reject);
        request.end('grant_type=authorization_code&code=not-a-code');
      });
      expect(session.alpnProtocol).to.equal('h2');
      expect(['TLSv1.2', 'TLSv1.3']).to.include(protocol);
      // The IdP's own answer to a bad code, relayed.
      expect(status).to.equal(400);
    } finally {
      session.close();
    }
  });
});
