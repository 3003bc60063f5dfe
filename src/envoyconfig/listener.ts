// Okta's listener: where Okta calls the IdP token URLs (TLS when given), relaying unchanged, with
// the guards first, then ext_proc, then the router. Its routes are routes.ts's, its filters filters.ts's.
import { socketAddress } from './addresses.js';
import { extProcFilter, sourceAllowList } from './filters.js';
import { oktaHookFilters, oktaHookRoutes } from './okta-hook.js';
import type { EnvoyConfigOptions } from './options.js';
import { rateLimitFilter, type RateLimit } from './rate-limit.js';
import { notAnIdpRoute, profileRoute, tokenRoute } from './routes.js';

// Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3 suites are not configurable and all strong).
const MODERN_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];

function downstreamTls(tls: { certFile: string; keyFile: string }) {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2', cipher_suites: MODERN_CIPHERS },
        tls_certificates: [{ certificate_chain: { filename: tls.certFile }, private_key: { filename: tls.keyFile } }],
        alpn_protocols: ['h2', 'http/1.1'],
      },
    },
  };
}

/** `hookRateLimit`: the hook route's limit, undefined without a hook or with its limit off. */
export function oktaIngressListener(options: EnvoyConfigOptions, hookRateLimit: RateLimit | undefined) {
  const profiles = options.profiles ?? [];
  return {
    name: 'okta_ingress',
    address: socketAddress(options.listen),
    filter_chains: [
      {
        ...(options.tls ? { transport_socket: downstreamTls(options.tls) } : {}),
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'okta_ingress',
              codec_type: 'AUTO',
              // Relay unchanged: keep the IdP's Server header, add no request id or XFF.
              server_header_transformation: 'PASS_THROUGH',
              generate_request_id: false,
              skip_xff_append: true,
              // The client's address (the hook's per-client rate limit key) is the connection's
              // own, never an X-Forwarded-For a caller writes itself (which would give it a fresh
              // bucket per value, or Okta's); with trusted hops, the address the proxies appended.
              use_remote_address: true,
              ...(options.xffTrustedHops ? { xff_num_trusted_hops: options.xffTrustedHops } : {}),
              route_config: {
                name: 'idp_token_routes',
                // use_remote_address makes Envoy add these; the IdP and the sidecar get neither.
                request_headers_to_remove: ['x-envoy-external-address', 'x-envoy-internal'],
                virtual_hosts: [
                  {
                    name: 'idps',
                    domains: ['*'],
                    routes: [
                      ...options.idps.map((idp) => tokenRoute(idp, options.tokenRateLimit)),
                      ...profiles.map((profile) => profileRoute(profile, options.mode)),
                      ...(options.oktaHook ? oktaHookRoutes(hookRateLimit) : []),
                      notAnIdpRoute(),
                    ],
                  },
                ],
              },
              http_filters: [
                // Guards first: a refused call reaches neither the sidecar nor the IdP.
                ...(options.allowSources && options.allowSources.length > 0 ? [sourceAllowList(options.allowSources)] : []),
                ...(options.tokenRateLimit || hookRateLimit ? [rateLimitFilter('rate_limit')] : []),
                extProcFilter(options),
                ...(options.oktaHook ? oktaHookFilters() : []),
                {
                  name: 'envoy.filters.http.router',
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
                    // No x-envoy-* headers towards the IdP or back to Okta.
                    suppress_envoy_headers: true,
                  },
                },
              ],
            },
          },
        ],
      },
    ],
  };
}
