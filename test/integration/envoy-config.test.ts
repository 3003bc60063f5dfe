// Every Envoy config we ship or render passes the real `envoy --mode validate`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse } from 'yaml';
import { GENERATED_FILES } from '../../scripts/render-envoy-examples.js';
import { validateEnvoyConfig } from '../support/envoy.js';
import { runCli } from '../support/sidecar.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ENVOY_DIR = path.join(ROOT, 'envoy');

describe('Envoy configs (real envoy --mode validate)', function () {
  this.timeout(60_000);

  for (const [file, render] of Object.entries(GENERATED_FILES)) {
    it(`${file} is what the renderer produces (regenerate: node dist/scripts/render-envoy-examples.js)`, () => {
      expect(readFileSync(path.join(ROOT, file), 'utf8')).to.equal(render());
    });
  }

  it('deploy/kubernetes/envoy.yaml validates (with a real certificate in place of the Secret)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-k8s-'));
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=envoy', '-keyout', `${dir}/tls.key`, '-out', `${dir}/tls.crt`],
      { stdio: 'ignore' },
    );
    const config = readFileSync(path.join(ROOT, 'deploy/kubernetes/envoy.yaml'), 'utf8').replaceAll('/etc/envoy/tls/', `${dir}/`);
    writeFileSync(`${dir}/envoy.yaml`, config);
    const result = await validateEnvoyConfig(`${dir}/envoy.yaml`);
    expect(result.ok, result.output).to.equal(true);
  });

  for (const file of readdirSync(ENVOY_DIR).filter((name) => name.endsWith('.yaml'))) {
    it(`envoy/${file} validates`, async () => {
      const result = await validateEnvoyConfig(path.join(ENVOY_DIR, file));
      expect(result.ok, result.output).to.equal(true);
    });
  }

  const variants: Array<[string, string[]]> = [
    ['observability, one http IdP', ['--mode', 'observability', '--idp', 'demo=http://127.0.0.1:3000/token']],
    [
      'buffered, https IdPs with paths, ports and a query, custom timeout',
      [
        '--mode',
        'buffered',
        '--message-timeout-ms',
        '350',
        '--idp',
        'entra=https://login.microsoftonline.com/t/oauth2/v2.0/token',
        '--idp',
        'corp=https://idp.corp.example:8443/oauth/token?tenant=a',
        '--idp',
        'ip_v4=https://10.1.2.3/token',
      ],
    ],
    ['sidecar by DNS name', ['--sidecar', 'token-tap:50051', '--idp', 'google=https://oauth2.googleapis.com/token']],
    [
      'profile routes for GitHub and X, both modes',
      [
        '--idp',
        'github=https://github.com/login/oauth/access_token',
        '--userinfo',
        'github=https://api.github.com/user',
        '--idp',
        'x=https://api.x.com/2/oauth2/token',
        '--userinfo',
        'x=https://api.x.com/2/users/me',
        '--userinfo-subject',
        'x=data.id',
      ],
    ],
    [
      'profile route, buffered',
      ['--mode', 'buffered', '--idp', 'github=https://github.com/login/oauth/access_token', '--userinfo', 'github=https://api.github.com/user'],
    ],
    [
      'sidecar on a Unix socket (pipe), both guards',
      [
        '--sidecar',
        'unix:/run/token-tap/extproc.sock',
        '--token-rate-limit',
        '50/s',
        '--allow-source',
        '10.0.0.0/8',
        '--allow-source',
        '2001:db8::/32',
        '--allow-source',
        '192.0.2.7',
        '--idp',
        'a=https://a.example/token',
        '--idp',
        'b=https://b.example/token',
      ],
    ],
    ['rate limit per minute, buffered', ['--mode', 'buffered', '--token-rate-limit', '600/m', '--idp', 'a=https://a.example/token']],
    ['readiness listener on every address (Kubernetes)', ['--ready', '0.0.0.0:9902', '--idp', 'a=https://a.example/token']],
    ['no readiness listener', ['--ready', 'off', '--idp', 'a=https://a.example/token']],
    ['Okta hook with its default rate limit', ['--okta-hook', '127.0.0.1:8081', '--idp', 'a=https://a.example/token']],
    [
      'Okta hook rate limit per minute with a burst, and token routes limited too, buffered',
      [
        '--mode',
        'buffered',
        '--okta-hook',
        '127.0.0.1:8081',
        '--okta-hook-rate-limit',
        '3000/m:500',
        '--token-rate-limit',
        '50/s',
        '--idp',
        'a=https://a.example/token',
      ],
    ],
    ['Okta hook rate limit off', ['--okta-hook', 'token-tap-hook:8081', '--okta-hook-rate-limit', 'off', '--idp', 'a=https://a.example/token']],
    [
      'Okta hook behind a load balancer (client address from X-Forwarded-For), per hour, with the source allow-list',
      [
        '--okta-hook',
        '127.0.0.1:8081',
        '--okta-hook-rate-limit',
        '100000/h:500',
        '--xff-trusted-hops',
        '1',
        '--allow-source',
        '10.0.0.0/8',
        '--idp',
        'a=https://a.example/token',
      ],
    ],
    [
      'Okta hook with two trusted hops and its rate limit off',
      ['--okta-hook', '127.0.0.1:8081', '--okta-hook-rate-limit', 'off', '--xff-trusted-hops', '2', '--idp', 'a=https://a.example/token'],
    ],
  ];
  for (const [name, args] of variants) {
    it(`token-tap envoy-config output validates: ${name}`, async () => {
      const rendered = await runCli(['envoy-config', ...args], {});
      expect(rendered.code, rendered.stderr).to.equal(0);
      const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-validate-')), 'envoy.yaml');
      writeFileSync(file, rendered.stdout);
      const result = await validateEnvoyConfig(file);
      expect(result.ok, result.output).to.equal(true);
    });
  }

  it('token-tap envoy-config output validates: a TLS listener with a real certificate', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-tls-'));
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=envoy', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`],
      { stdio: 'ignore' },
    );
    const rendered = await runCli(
      ['envoy-config', '--idp', 'okta=https://partner.okta.com/oauth2/v1/token', '--tls-cert', `${dir}/cert.pem`, '--tls-key', `${dir}/key.pem`],
      {},
    );
    expect(rendered.code, rendered.stderr).to.equal(0);
    expect(rendered.stdout).to.contain('DownstreamTlsContext').and.contain('h2');
    writeFileSync(`${dir}/envoy.yaml`, rendered.stdout);
    const result = await validateEnvoyConfig(`${dir}/envoy.yaml`);
    expect(result.ok, result.output).to.equal(true);
  });

  it('token-tap envoy-config output validates: mTLS to a sidecar by DNS name, with a client certificate', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-sidecar-tls-'));
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=envoy', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`],
      { stdio: 'ignore' },
    );
    const rendered = await runCli(
      [
        'envoy-config',
        '--idp',
        'a=https://a.example/token',
        '--sidecar',
        'token-tap.internal:50051',
        '--sidecar-tls-cert',
        `${dir}/cert.pem`,
        '--sidecar-tls-key',
        `${dir}/key.pem`,
        '--sidecar-ca',
        `${dir}/cert.pem`,
      ],
      {},
    );
    expect(rendered.code, rendered.stderr).to.equal(0);
    expect(rendered.stdout).to.contain('UpstreamTlsContext').and.contain(`${dir}/cert.pem`).and.contain('sni: token-tap.internal');
    writeFileSync(`${dir}/envoy.yaml`, rendered.stdout);
    const result = await validateEnvoyConfig(`${dir}/envoy.yaml`);
    expect(result.ok, result.output).to.equal(true);
  });

  it('token-tap envoy-config refuses an admin beyond loopback (it can stop Envoy); its stats go through --ready', async () => {
    const result = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--admin', '0.0.0.0:9901'], {});
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('--admin must be a loopback address');
    expect(result.stdout).to.equal('');
  });

  it('token-tap envoy-config refuses half an mTLS setup, a bad rate and a bad network, all at once', async () => {
    const result = await runCli(
      [
        'envoy-config',
        '--idp',
        'a=https://x/t',
        '--sidecar-tls-cert',
        '/nonexistent/c.pem',
        '--token-rate-limit',
        'lots',
        '--allow-source',
        '10.0.0.0/33',
        '--sidecar',
        'unix:',
      ],
      {},
    );
    expect(result.code).to.equal(1);
    expect(result.stderr)
      .to.contain('--sidecar-tls-cert, --sidecar-tls-key and --sidecar-ca go together')
      .and.contain('--token-rate-limit must be N/s')
      .and.contain('--allow-source must be')
      .and.contain('unix: needs a path');
    expect(result.stdout).to.equal('');
  });

  it('token-tap envoy-config renders the hook route rate limit by default, a bucket per client address, and refuses a bad one or one without --okta-hook', async () => {
    const rendered = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--okta-hook', '127.0.0.1:8081'], {});
    expect(rendered.code, rendered.stderr).to.equal(0);
    expect(rendered.stdout)
      .to.contain('stat_prefix: okta_hook_rate_limit')
      .and.contain('max_tokens: 200')
      .and.contain('# Okta hook rate limit: 100/s, burst 200, per client address');
    expect(rendered.stdout).to.contain("# Client address: the connection's own address (behind a load balancer that is the balancer's");
    const config = parse(rendered.stdout);
    const hcm = config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    // The client's address is the connection's: an X-Forwarded-For the caller writes names nobody.
    expect(hcm.use_remote_address).to.equal(true);
    expect(hcm).to.not.have.property('xff_num_trusted_hops');
    const hook = hcm.route_config.virtual_hosts[0].routes.find((route: { name: string }) => route.name === 'okta_token_hook');
    expect(hook.route.rate_limits).to.deep.equal([{ actions: [{ remote_address: {} }] }]);
    const buckets = hook.typed_per_filter_config['envoy.filters.http.local_ratelimit'];
    // A wildcard entry (a key, no value): a bucket per address; none shared by everyone.
    expect(buckets.descriptors).to.deep.equal([
      { entries: [{ key: 'remote_address' }], token_bucket: { max_tokens: 200, tokens_per_fill: 100, fill_interval: '1s' } },
    ]);
    expect(buckets.always_consume_default_token_bucket).to.equal(false);
    expect(buckets.max_dynamic_descriptors).to.equal(10_000);
    const hops = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--okta-hook', '127.0.0.1:8081', '--xff-trusted-hops', '1'], {});
    expect(hops.code, hops.stderr).to.equal(0);
    expect(parse(hops.stdout).static_resources.listeners[0].filter_chains[0].filters[0].typed_config.xff_num_trusted_hops).to.equal(1);
    expect(hops.stdout).to.contain('# Client address: the address 1 hop(s) from the right of X-Forwarded-For');
    const off = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--okta-hook', '127.0.0.1:8081', '--okta-hook-rate-limit', '0'], {});
    expect(off.stdout).to.not.contain('local_ratelimit').and.not.contain('rate_limits');
    expect(off.stdout).to.contain('# Okta hook rate limit: off');
    const bad = await runCli(
      ['envoy-config', '--idp', 'a=https://x/t', '--okta-hook', '127.0.0.1:8081', '--okta-hook-rate-limit', 'fast', '--xff-trusted-hops', '-1'],
      {},
    );
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.contain('--okta-hook-rate-limit must be N/s').and.contain('--xff-trusted-hops must be an integer');
    const alone = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--okta-hook-rate-limit', '10/s', '--xff-trusted-hops', '1'], {});
    expect(alone.code).to.equal(1);
    expect(alone.stderr)
      .to.contain('--okta-hook-rate-limit limits the route --okta-hook adds: give --okta-hook too')
      .and.contain('--xff-trusted-hops names the client of the hook route');
  });

  it('token-tap envoy-config refuses a TLS key without a certificate, or files that do not exist', async () => {
    const result = await runCli(['envoy-config', '--idp', 'a=https://x/t', '--tls-key', '/nonexistent/key.pem'], {});
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('--tls-cert and --tls-key go together').and.contain('/nonexistent/key.pem does not exist');
  });

  it('token-tap envoy-config reports every bad flag at once and exits 1', async () => {
    const result = await runCli(['envoy-config', '--idp', 'nourl', '--idp', 'a=ftp://x', '--listen', 'nowhere', '--ready', 'nowhere'], {});
    expect(result.code).to.equal(1);
    expect(result.stderr)
      .to.contain('NAME=URL')
      .and.contain('http or https')
      .and.contain('--listen must be HOST:PORT')
      .and.contain('--ready must be HOST:PORT');
    expect(result.stdout).to.equal('');
  });
});
