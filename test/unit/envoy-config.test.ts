import { expect } from 'chai';
import { parse } from 'yaml';
import { parseCidr, parseIdpFlag, parseProfileFlag } from '../../src/envoyconfig/flags.js';
import type { EnvoyConfigOptions } from '../../src/envoyconfig/options.js';
import { parseHookRateLimit, parseRateLimit } from '../../src/envoyconfig/rate-limit.js';
import { renderEnvoyConfig, renderEnvoyYaml } from '../../src/envoyconfig/render.js';
import { OKTA_HOOK_PATH } from '../../src/contract.js';
import { profileRoutePath, tokenRoutePath } from '../../src/contract.js';

const base = {
  listen: { host: '0.0.0.0', port: 8080 },
  sidecar: { host: '127.0.0.1', port: 50051 },
  admin: { host: '127.0.0.1', port: 9901 },
};

// Walks the rendered bootstrap the way Envoy would read it.
function listenerParts(config: Record<string, unknown>) {
  const hcm = (config as any).static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
  return { hcm, routes: hcm.route_config.virtual_hosts[0].routes, filters: hcm.http_filters, clusters: (config as any).static_resources.clusters };
}

describe('envoyconfig/render', () => {
  it('routes /idp/NAME/token to the IdP token path with host rewrite and names the IdP in ext_proc metadata', () => {
    const config = renderEnvoyConfig({ ...base, mode: 'observability', idps: [parseIdpFlag('entra=https://login.microsoftonline.com/t1/oauth2/v2.0/token')] });
    const { routes, clusters } = listenerParts(config);
    expect(routes[0].match).to.deep.equal({ path: tokenRoutePath('entra') });
    expect(routes[0].route).to.include({ cluster: 'idp_entra', prefix_rewrite: '/t1/oauth2/v2.0/token', host_rewrite_literal: 'login.microsoftonline.com' });
    expect(routes[0].typed_per_filter_config['envoy.filters.http.ext_proc'].overrides.grpc_initial_metadata).to.deep.equal([
      { key: 'x-token-tap-idp', value: 'entra' },
    ]);
    const tls = clusters[0].transport_socket.typed_config;
    expect(tls.sni).to.equal('login.microsoftonline.com');
    expect(clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({
      address: 'login.microsoftonline.com',
      port_value: 443,
    });
  });

  it('keeps ext_proc off every other route', () => {
    const { routes } = listenerParts(renderEnvoyConfig({ ...base, mode: 'observability', idps: [parseIdpFlag('a=http://127.0.0.1:3000/token')] }));
    expect(routes.at(-1).direct_response.status).to.equal(404);
    expect(routes.at(-1).typed_per_filter_config['envoy.filters.http.ext_proc'].disabled).to.equal(true);
  });

  it('observability mode streams the response body and never waits; buffered mode buffers with a message timeout', () => {
    const observability = listenerParts(renderEnvoyConfig({ ...base, mode: 'observability', idps: [parseIdpFlag('a=http://127.0.0.1:3000/token')] })).filters[0]
      .typed_config;
    expect(observability).to.include({ failure_mode_allow: true, observability_mode: true });
    expect(observability.processing_mode).to.include({ request_header_mode: 'SKIP', request_body_mode: 'NONE', response_body_mode: 'STREAMED' });
    const buffered = listenerParts(renderEnvoyConfig({ ...base, mode: 'buffered', idps: [parseIdpFlag('a=http://127.0.0.1:3000/token')] })).filters[0]
      .typed_config;
    expect(buffered).to.include({ failure_mode_allow: true, message_timeout: '0.2s' });
    expect(buffered.observability_mode).to.equal(undefined);
    expect(buffered.processing_mode).to.include({ request_body_mode: 'NONE', response_body_mode: 'BUFFERED' });
  });

  it('never sends the request (and the client secret in it) to the sidecar', () => {
    for (const mode of ['observability', 'buffered'] as const) {
      const filter = listenerParts(renderEnvoyConfig({ ...base, mode, idps: [parseIdpFlag('a=http://127.0.0.1:3000/token')] })).filters[0].typed_config;
      expect(filter.processing_mode.request_header_mode).to.equal('SKIP');
      expect(filter.processing_mode.request_body_mode).to.equal('NONE');
    }
  });

  it('rejects bad --idp flags with a message that says what is expected', () => {
    expect(() => parseIdpFlag('noequals')).to.throw(/NAME=URL/);
    expect(() => parseIdpFlag('Bad Name=https://x/token')).to.throw(/lower-case/);
    expect(() => parseIdpFlag('a=ftp://x/token')).to.throw(/http or https/);
    expect(() => parseIdpFlag('a=https://user:pw@x/token')).to.throw(/credentials/);
    expect(() => renderEnvoyConfig({ ...base, mode: 'buffered', idps: [] })).to.throw(/at least one/);
    expect(() => renderEnvoyConfig({ ...base, mode: 'buffered', idps: [parseIdpFlag('a=https://x/t'), parseIdpFlag('a=https://y/t')] })).to.throw(/twice/);
  });

  it('a profile route asks for request headers (the bearer token) and names the IdP, the route kind and the subject field', () => {
    const config = renderEnvoyConfig({
      ...base,
      mode: 'buffered',
      idps: [parseIdpFlag('github=https://github.com/login/oauth/access_token')],
      profiles: [parseProfileFlag('github=https://api.github.com/user', new Map([['github', 'id']]))],
    });
    const { routes, clusters } = listenerParts(config);
    const profile = routes.find((route: { name: string }) => route.name === 'idp_github_userinfo');
    expect(profile.match.path).to.equal(profileRoutePath('github'));
    expect(profile.route).to.include({ cluster: 'idp_github_userinfo', prefix_rewrite: '/user', host_rewrite_literal: 'api.github.com' });
    const overrides = profile.typed_per_filter_config['envoy.filters.http.ext_proc'].overrides;
    expect(overrides.processing_mode).to.include({ request_header_mode: 'SEND', request_body_mode: 'NONE', response_body_mode: 'BUFFERED' });
    expect(overrides.grpc_initial_metadata).to.deep.equal([
      { key: 'x-token-tap-idp', value: 'github' },
      { key: 'x-token-tap-route', value: 'profile' },
      { key: 'x-token-tap-subject-field', value: 'id' },
    ]);
    expect(clusters.map((cluster: { name: string }) => cluster.name)).to.include('idp_github_userinfo');
  });

  it('refuses a profile route for an IdP without a token route, and a bad subject path', () => {
    expect(() =>
      renderEnvoyConfig({ ...base, mode: 'buffered', idps: [parseIdpFlag('a=https://x/t')], profiles: [parseProfileFlag('b=https://y/me')] }),
    ).to.throw(/names no IdP/);
    expect(() => parseProfileFlag('a=https://y/me', new Map([['a', 'data..id']]))).to.throw(/dotted field path/);
  });

  describe('the Okta hook route rate limit', () => {
    const hook = { host: '127.0.0.1', port: 8081 };
    const render = (extra: Partial<EnvoyConfigOptions>) =>
      listenerParts(renderEnvoyConfig({ ...base, mode: 'observability', idps: [parseIdpFlag('a=https://a.example/t')], oktaHook: hook, ...extra }));
    const hookBucket = (parts: ReturnType<typeof listenerParts>) =>
      parts.routes.find((route: { name: string }) => route.name === 'okta_token_hook').typed_per_filter_config['envoy.filters.http.local_ratelimit'];

    it('is on by default: 100/s with a burst of 200 on the POST route, the filter before the buffer filter', () => {
      const parts = render({});
      expect(hookBucket(parts).token_bucket).to.deep.equal({ max_tokens: 200, tokens_per_fill: 100, fill_interval: '1s' });
      expect(hookBucket(parts).stat_prefix).to.equal('okta_hook_rate_limit');
      const names = parts.filters.map((filter: { name: string }) => filter.name);
      expect(names.indexOf('envoy.filters.http.local_ratelimit')).to.be.within(0, names.indexOf('envoy.filters.http.buffer') - 1);
      // The filter itself has no bucket: token routes stay unlimited without --token-rate-limit.
      expect(parts.filters.find((filter: { name: string }) => filter.name === 'envoy.filters.http.local_ratelimit').typed_config.token_bucket).to.equal(
        undefined,
      );
      expect(parts.routes[0].typed_per_filter_config['envoy.filters.http.local_ratelimit']).to.equal(undefined);
      expect(parts.routes.find((route: { name: string }) => route.name === 'okta_token_hook').match.path).to.equal(OKTA_HOOK_PATH);
    });

    it('takes another rate and burst, or none ("off", 0)', () => {
      expect(hookBucket(render({ oktaHookRateLimit: parseHookRateLimit('600/m:50') })).token_bucket).to.deep.equal({
        max_tokens: 50,
        tokens_per_fill: 600,
        fill_interval: '60s',
      });
      expect(hookBucket(render({ oktaHookRateLimit: parseHookRateLimit('20/s') })).token_bucket).to.deep.equal({
        max_tokens: 20,
        tokens_per_fill: 20,
        fill_interval: '1s',
      });
      for (const off of ['off', '0', ' OFF ']) {
        const parts = render({ oktaHookRateLimit: parseHookRateLimit(off) });
        expect(hookBucket(parts), off).to.equal(undefined);
        expect(parts.filters.map((filter: { name: string }) => filter.name)).to.not.include('envoy.filters.http.local_ratelimit');
      }
      // Without a hook there is no hook route and no filter.
      const none = listenerParts(renderEnvoyConfig({ ...base, mode: 'observability', idps: [parseIdpFlag('a=https://a.example/t')] }));
      expect(none.filters.map((filter: { name: string }) => filter.name)).to.not.include('envoy.filters.http.local_ratelimit');
      expect(renderEnvoyYaml({ ...base, mode: 'observability', idps: [parseIdpFlag('a=https://a.example/t')], oktaHook: hook })).to.contain(
        '# Okta hook rate limit: 100/s, burst 200, per client address (429 beyond)',
      );
    });

    it("is a bucket per client address, the address being the connection's unless trusted hops are given", () => {
      const parts = render({ oktaHookRateLimit: parseHookRateLimit('600/m:50') });
      const route = parts.routes.find((entry: { name: string }) => entry.name === 'okta_token_hook');
      expect(route.route.rate_limits).to.deep.equal([{ actions: [{ remote_address: {} }] }]);
      expect(hookBucket(parts)).to.deep.include({
        descriptors: [{ entries: [{ key: 'remote_address' }], token_bucket: { max_tokens: 50, tokens_per_fill: 600, fill_interval: '60s' } }],
        always_consume_default_token_bucket: false,
        max_dynamic_descriptors: 10_000,
      });
      // No rate_limits on the hook route when the limit is off, and none on any other route.
      expect(render({ oktaHookRateLimit: false }).routes.filter((entry: { route?: { rate_limits?: unknown } }) => entry.route?.rate_limits)).to.deep.equal([]);
      expect(
        parts.routes.filter((entry: { route?: { rate_limits?: unknown } }) => entry.route?.rate_limits).map((entry: { name: string }) => entry.name),
      ).to.deep.equal(['okta_token_hook']);
      const hcm = (config: Record<string, any>) => config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      const options = { ...base, mode: 'observability' as const, idps: [parseIdpFlag('a=https://a.example/t')], oktaHook: hook };
      expect(hcm(renderEnvoyConfig(options)))
        .to.include({ use_remote_address: true, skip_xff_append: true })
        .and.not.have.property('xff_num_trusted_hops');
      expect(hcm(renderEnvoyConfig({ ...options, xffTrustedHops: 2 }))).to.include({ use_remote_address: true, xff_num_trusted_hops: 2 });
      expect(hcm(renderEnvoyConfig(options)).route_config.request_headers_to_remove).to.deep.equal(['x-envoy-external-address', 'x-envoy-internal']);
    });

    it('refuses a rate it cannot render', () => {
      for (const bad of ['lots', '100', '100/d', '0/s', '100/s:0', '100/s:', '-1/s'])
        expect(() => parseHookRateLimit(bad), bad).to.throw(/--okta-hook-rate-limit must be/);
    });
  });

  it('the YAML says exactly what renderEnvoyConfig says, whatever the flag values (no value escapes its header comment)', () => {
    // Odd values straight into the options, past the flag parsers (which refuse some of them): the
    // header comment must not let any of them add or change a key.
    const sockets = [
      '/run/token-tap/extproc.sock',
      '/a\nb',
      '/x\r\nstatic_resources: {}',
      '/y\n# z\nadmin: null',
      '/u\u2028v',
      '/nul\u0000here',
      '/tab\there',
      '/q\'uo"te: #',
    ];
    const idpSets = [
      [parseIdpFlag('a=https://a.example/token')],
      [parseIdpFlag('entra=https://login.microsoftonline.com/t%0A1/oauth2/v2.0/token'), parseIdpFlag('b=http://127.0.0.1:3000/p%20a%23th?x')],
      [{ name: 'odd', tokenUrl: new URL('https://odd.example/a\nb: c/%E2%80%A8') }],
    ];
    const extras: Array<Partial<EnvoyConfigOptions>> = [
      {},
      { allowSources: [parseCidr('10.0.0.0/8'), parseCidr('2001:db8::/32')], tokenRateLimit: parseRateLimit('50/s') },
      { oktaHook: { host: '127.0.0.1', port: 8081 }, admin: { host: '::1', port: 9901 } },
      { profiles: [parseProfileFlag('a=https://a.example/me')] },
      { sidecarTls: { certFile: '/c\n.pem', keyFile: '/k.pem', caFile: '/ca.pem' }, tls: { certFile: '/t.pem', keyFile: '/tk\n: x' } },
    ];
    let checked = 0;
    for (const socket of sockets) {
      for (const idps of idpSets) {
        for (const [index, extra] of extras.entries()) {
          if (extra.profiles && !idps.some((idp) => idp.name === 'a')) continue;
          for (const sidecar of [{ socket }, { host: '127.0.0.1', port: 50051 }]) {
            const options: EnvoyConfigOptions = { ...base, mode: index % 2 === 0 ? 'observability' : 'buffered', idps, sidecar, ...extra };
            const yaml = renderEnvoyYaml(options);
            expect(parse(yaml), JSON.stringify(socket)).to.deep.equal(JSON.parse(JSON.stringify(renderEnvoyConfig(options))));
            const comments = yaml.split('\n').filter((line) => line.startsWith('#'));
            expect(yaml.startsWith(comments.join('\n')), 'the header is comment lines only').to.equal(true);
            checked += 1;
          }
        }
      }
    }
    expect(checked).to.be.greaterThan(100);
  });
});
