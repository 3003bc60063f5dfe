// Renders a complete Envoy bootstrap from a short list of IdPs. Pure: options in, a config
// object (and its YAML) out. Every output must pass `envoy --mode validate`.
import { stringify } from 'yaml';
import net from 'node:net';
import { escapeControlCharacters, formatHostPort, formatListenAddress, isSocket, type HostPort, type ListenAddress } from '../config/values.js';
import {
  ENVOY_READY_PATH,
  EXT_PROC_HEALTH_SERVICE,
  IDP_METADATA_KEY,
  IDP_NAME_RULE,
  isIdpName,
  profileRoutePath,
  ROUTE_METADATA_KEY,
  SUBJECT_FIELD_METADATA_KEY,
  tokenRoutePath,
} from '../contract.js';
import { hookRateLimitOf, oktaHookCluster, oktaHookFilters, oktaHookRoutes } from './okta-hook.js';
import { readinessListener } from './readiness.js';
import { describeRateLimit, RATE_LIMIT_FILTER, rateLimitFilter, routeTokenBucket, type RateLimit } from './rate-limit.js';

export { parseHookRateLimit, parseRateLimit, type RateLimit } from './rate-limit.js';

export type ProcessingMode = 'observability' | 'buffered';

export interface IdpRoute {
  /** Route and cluster name, and what the sidecar stores the grant under. */
  name: string;
  /** The IdP's real token endpoint. */
  tokenUrl: URL;
}

/** An IdP's profile (userinfo) endpoint, relayed so the sidecar learns who a token belongs to. */
export interface ProfileRoute {
  name: string;
  profileUrl: URL;
  /** Dotted path of the user id in the profile JSON; the sidecar tries sub, id, user_id without it. */
  subjectField?: string;
}

export interface EnvoyConfigOptions {
  idps: IdpRoute[];
  /** Profile routes for IdPs whose token response names no user (no id_token). */
  profiles?: ProfileRoute[];
  listen: HostPort;
  /** The sidecar's ext_proc listener: a Unix socket (Envoy's `pipe`) or HOST:PORT. */
  sidecar: ListenAddress;
  /** mTLS to the sidecar: Envoy's client certificate and key, and the CA the sidecar's certificate chains to. */
  sidecarTls?: { certFile: string; keyFile: string; caFile: string };
  /** Envoy-side guards: at most `requests` per `perSeconds` on each token route (local rate limit; 429 beyond). */
  tokenRateLimit?: RateLimit;
  /** Envoy-side guards: only these source networks reach any route (RBAC on the connection's address; 403 otherwise). */
  allowSources?: Cidr[];
  admin: HostPort;
  /** Envoy's readiness listener (GET /ready: 200 only while Envoy sees the sidecar healthy; readiness.ts). */
  ready?: HostPort;
  mode: ProcessingMode;
  /** How long Envoy waits for each sidecar reply in buffered mode before failing open. */
  messageTimeoutMs?: number;
  /** Circuit breaker: ext_proc streams open to the sidecar at once; past it Envoy fails open (default 4096). */
  sidecarMaxStreams?: number;
  /** CA bundle for verifying https IdPs. */
  upstreamCaFile?: string;
  /** Serve Okta over TLS (Okta requires https) with this certificate chain and key. */
  tls?: { certFile: string; keyFile: string };
  /** The sidecar's Okta token inline hook listener: adds POST /okta/token-hook (envoyconfig/okta-hook.ts). */
  oktaHook?: HostPort;
  /** A token bucket per client address on the hook route (429 beyond it); default DEFAULT_OKTA_HOOK_RATE_LIMIT, false: none. */
  oktaHookRateLimit?: RateLimit | false;
  /**
   * Proxies in front of Envoy that append the client's address to X-Forwarded-For: the client address
   * (the hook's per-client key, the access log's downstream address) is then the one this many hops
   * from the right of that header. Default 0: the connection's own address, whatever the header says.
   */
  xffTrustedHops?: number;
}

export interface Cidr {
  address: string;
  prefixLength: number;
}

/** An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`; a bare address is one host) from --allow-source. */
export function parseCidr(text: string): Cidr {
  const [address = '', prefix, extra] = text.trim().split('/');
  const family = net.isIP(address);
  const max = family === 6 ? 128 : 32;
  const prefixLength = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
  if (family === 0 || extra !== undefined || !(prefixLength >= 0 && prefixLength <= max)) {
    throw new Error(`--allow-source must be an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32, got "${text}"`);
  }
  return { address, prefixLength };
}

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

export const SIDECAR_CLUSTER = 'token_tap_sidecar';
export const DEFAULT_CA_FILE = '/etc/ssl/certs/ca-certificates.crt';
const EXT_PROC_FILTER = 'envoy.filters.http.ext_proc';
const RBAC_FILTER = 'envoy.filters.http.rbac';

/** Parses `NAME=URL` from the command line (--idp). */
export function parseIdpFlag(text: string): IdpRoute {
  const { name, url } = parseNamedUrl(text, '--idp', 'entra=https://login.microsoftonline.com/TENANT/oauth2/v2.0/token');
  return { name, tokenUrl: url };
}

function parseNamedUrl(text: string, flag: string, example: string): { name: string; url: URL } {
  const separator = text.indexOf('=');
  if (separator <= 0) throw new Error(`${flag} must be NAME=URL (for example ${example}), got "${text}"`);
  const name = text.slice(0, separator);
  const rawUrl = text.slice(separator + 1);
  if (!isIdpName(name)) throw new Error(`IdP name "${name}" must be ${IDP_NAME_RULE}`);
  let tokenUrl: URL;
  try {
    tokenUrl = new URL(rawUrl);
  } catch {
    throw new Error(`IdP "${name}": "${rawUrl}" is not a URL`);
  }
  if (tokenUrl.protocol !== 'https:' && tokenUrl.protocol !== 'http:') throw new Error(`IdP "${name}": ${flag} URL must be http or https`);
  if (tokenUrl.username || tokenUrl.password) throw new Error(`IdP "${name}": ${flag} URL must not carry credentials`);
  if (tokenUrl.hash) throw new Error(`IdP "${name}": ${flag} URL must not have a #fragment`);
  return { name, url: tokenUrl };
}

/** Parses `NAME=URL` for --userinfo, with an optional subject path from --userinfo-subject. */
export function parseProfileFlag(text: string, subjectFields: ReadonlyMap<string, string> = new Map()): ProfileRoute {
  const { name, url } = parseNamedUrl(text, '--userinfo', 'github=https://api.github.com/user');
  const subjectField = subjectFields.get(name);
  if (subjectField !== undefined && !/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(subjectField)) {
    throw new Error(`--userinfo-subject for "${name}" must be a dotted field path such as id or data.id`);
  }
  return { name, profileUrl: url, ...(subjectField ? { subjectField } : {}) };
}

function socketAddress({ host, port }: HostPort) {
  return { socket_address: { address: host, port_value: port } };
}

function listenAddress(address: ListenAddress) {
  return isSocket(address) ? { pipe: { path: address.socket } } : socketAddress(address);
}

function upstreamPort(url: URL): number {
  if (url.port) return Number.parseInt(url.port, 10);
  return url.protocol === 'https:' ? 443 : 80;
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '');
}

function processingMode(mode: ProcessingMode) {
  return {
    // Okta's request (and its client secret) is never sent to the sidecar.
    request_header_mode: 'SKIP',
    request_body_mode: 'NONE',
    request_trailer_mode: 'SKIP',
    response_header_mode: 'SEND',
    response_body_mode: mode === 'observability' ? 'STREAMED' : 'BUFFERED',
    response_trailer_mode: 'SKIP',
  };
}

function extProcFilter(options: EnvoyConfigOptions) {
  const observability = options.mode === 'observability';
  return {
    name: EXT_PROC_FILTER,
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
      grpc_service: { envoy_grpc: { cluster_name: SIDECAR_CLUSTER }, timeout: '1s' },
      // Fail open: a sidecar that is down, slow or broken never breaks a login.
      failure_mode_allow: true,
      processing_mode: processingMode(options.mode),
      ...(observability
        ? { observability_mode: true, deferred_close_timeout: '2s' }
        : { message_timeout: `${(options.messageTimeoutMs ?? 200) / 1000}s` }),
      stat_prefix: 'token_tap',
    },
  };
}

function relayRoute(name: string, path: string, cluster: string, url: URL, overrides: Record<string, unknown>) {
  return {
    name,
    match: { path },
    route: {
      cluster,
      prefix_rewrite: `${url.pathname}${url.search}`,
      host_rewrite_literal: url.host,
      timeout: '30s',
    },
    typed_per_filter_config: {
      [EXT_PROC_FILTER]: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
        overrides,
      },
    },
  };
}

function tokenRoute(idp: IdpRoute, rateLimit: RateLimit | undefined) {
  // The metadata tells the sidecar which IdP this response came from.
  const route = relayRoute(`idp_${idp.name}_token`, tokenRoutePath(idp.name), `idp_${idp.name}`, idp.tokenUrl, {
    grpc_initial_metadata: [{ key: IDP_METADATA_KEY, value: idp.name }],
  });
  // One bucket per token route; beyond it Envoy answers 429 and the IdP never sees the call.
  if (rateLimit) (route.typed_per_filter_config as Record<string, unknown>)[RATE_LIMIT_FILTER] = routeTokenBucket(`token_rate_limit_${idp.name}`, 'token_tap.token_rate_limit', rateLimit);
  return route;
}

/**
 * Only these networks reach the listener at all. The connection's own address (direct_remote_ip),
 * never X-Forwarded-For, which a caller writes itself: behind a load balancer that is the
 * balancer's address, so allow-list there or keep the client address (PROXY protocol).
 */
function sourceAllowList(sources: Cidr[]) {
  return {
    name: RBAC_FILTER,
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC',
      rules: {
        action: 'ALLOW',
        policies: {
          allowed_sources: {
            permissions: [{ any: true }],
            principals: sources.map((source) => ({ direct_remote_ip: { address_prefix: source.address, prefix_len: source.prefixLength } })),
          },
        },
      },
    },
  };
}

function sidecarTransportSocket(sidecar: ListenAddress, tls: { certFile: string; keyFile: string; caFile: string }) {
  // The sidecar's certificate must name the address Envoy dials (socket: any name the CA signed).
  const san = isSocket(sidecar) ? [] : [{ san_type: isIpLiteral(sidecar.host) ? 'IP_ADDRESS' : 'DNS', matcher: { exact: sidecar.host } }];
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      ...(isSocket(sidecar) || isIpLiteral(sidecar.host) ? {} : { sni: sidecar.host }),
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
        // gRPC over TLS is HTTP/2 by ALPN; Node's server refuses a client that offers none.
        alpn_protocols: ['h2'],
        tls_certificates: [{ certificate_chain: { filename: tls.certFile }, private_key: { filename: tls.keyFile } }],
        validation_context: { trusted_ca: { filename: tls.caFile }, ...(san.length > 0 ? { match_typed_subject_alt_names: san } : {}) },
      },
    },
  };
}

function profileRoute(profile: ProfileRoute, mode: ProcessingMode) {
  return relayRoute(`idp_${profile.name}_userinfo`, profileRoutePath(profile.name), `idp_${profile.name}_userinfo`, profile.profileUrl, {
    // The request headers are needed here, for the bearer token whose user the profile names.
    processing_mode: { ...processingMode(mode), request_header_mode: 'SEND' },
    grpc_initial_metadata: [
      { key: IDP_METADATA_KEY, value: profile.name },
      { key: ROUTE_METADATA_KEY, value: 'profile' },
      ...(profile.subjectField ? [{ key: SUBJECT_FIELD_METADATA_KEY, value: profile.subjectField }] : []),
    ],
  });
}

function upstreamCluster(name: string, url: URL, caFile: string) {
  const host = hostOf(url);
  const https = url.protocol === 'https:';
  return {
    name,
    type: isIpLiteral(host) ? 'STATIC' : 'LOGICAL_DNS',
    dns_lookup_family: 'V4_PREFERRED',
    connect_timeout: '5s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: socketAddress({ host, port: upstreamPort(url) }) } }] }],
    },
    ...(https
      ? {
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
              sni: host,
              common_tls_context: {
                validation_context: {
                  trusted_ca: { filename: caFile },
                  match_typed_subject_alt_names: [{ san_type: isIpLiteral(host) ? 'IP_ADDRESS' : 'DNS', matcher: { exact: host } }],
                },
              },
            },
          },
        }
      : {}),
  };
}

// Kept in step with ops/health.ts, which answers for it.
export const DEFAULT_SIDECAR_MAX_STREAMS = 4096;

function sidecarCluster(sidecar: ListenAddress, maxStreams: number, tls: EnvoyConfigOptions['sidecarTls']) {
  return {
    name: SIDECAR_CLUSTER,
    type: isSocket(sidecar) || isIpLiteral(sidecar.host) ? 'STATIC' : 'STRICT_DNS',
    connect_timeout: '0.25s',
    // A sidecar that is down, stalled or stopping is marked unhealthy within about a second, and
    // then ext_proc fails open at once instead of each login waiting for a connect or for
    // message_timeout. Panic threshold 0: with no healthy sidecar, Envoy does not try it anyway.
    // no_traffic_interval: the 60 s default would keep a restarted sidecar out that long.
    // update_merge_window 0: health changes reach the workers at once, not up to 1 s later.
    health_checks: [
      {
        timeout: '0.5s',
        interval: '1s',
        unhealthy_interval: '0.5s',
        no_traffic_interval: '1s',
        unhealthy_threshold: 2,
        healthy_threshold: 1,
        grpc_health_check: { service_name: EXT_PROC_HEALTH_SERVICE },
      },
    ],
    common_lb_config: { healthy_panic_threshold: { value: 0 }, update_merge_window: '0s' },
    // Each token response in flight holds one stream: peak = peak token calls per second times
    // how long a stream stays open (the IdP's response time; in observability mode at most
    // deferred_close_timeout, longer while the sidecar lags). 4096 covers 2,000 logins/s with 2 s
    // streams; 1024 lost 0.2 % of captures at 3,000/s in bench/RESULTS.md. Past the limit Envoy
    // fails the stream open (the login goes on; upstream_rq_active_overflow counts the miss).
    circuit_breakers: {
      thresholds: [{ priority: 'DEFAULT', max_connections: maxStreams, max_pending_requests: maxStreams, max_requests: maxStreams, track_remaining: true }],
    },
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        explicit_http_config: { http2_protocol_options: {} },
        // In observability mode Envoy ends every ext_proc stream with RST_STREAM, and the
        // sidecar's HTTP/2 server (nghttp2's reset-flood guard: a burst of 1,000, then 33/s) sends
        // GOAWAY after about 1,000 of them, refusing the streams in flight: lost captures. Envoy
        // drains a connection after this many streams and opens a fresh one first.
        common_http_protocol_options: { max_requests_per_connection: SIDECAR_STREAMS_PER_CONNECTION },
      },
    },
    load_assignment: {
      cluster_name: SIDECAR_CLUSTER,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: listenAddress(sidecar) } }] }],
    },
    ...(tls ? { transport_socket: sidecarTransportSocket(sidecar, tls) } : {}),
  };
}

/** Below nghttp2's reset burst (1,000) in the sidecar; see the sidecar cluster. */
export const SIDECAR_STREAMS_PER_CONNECTION = 500;

export function renderEnvoyConfig(options: EnvoyConfigOptions): Record<string, unknown> {
  if (options.idps.length === 0) throw new Error('at least one --idp NAME=URL is required');
  const names = new Set<string>();
  for (const idp of options.idps) {
    if (names.has(idp.name)) throw new Error(`IdP "${idp.name}" is given twice`);
    names.add(idp.name);
  }
  const profiles = options.profiles ?? [];
  const profileNames = new Set<string>();
  for (const profile of profiles) {
    if (!names.has(profile.name)) throw new Error(`--userinfo "${profile.name}" names no IdP given with --idp`);
    if (profileNames.has(profile.name)) throw new Error(`--userinfo "${profile.name}" is given twice`);
    profileNames.add(profile.name);
  }
  const caFile = options.upstreamCaFile ?? DEFAULT_CA_FILE;
  const hookRateLimit = options.oktaHook ? hookRateLimitOf(options) : undefined;
  return {
    admin: { address: socketAddress(options.admin) },
    // Envoy ends each ext_proc stream with RST_STREAM unless told to half-close and wait for the
    // server's trailers. Node's HTTP/2 server (nghttp2's reset-flood guard) drops a connection
    // after ~1,000 resets, and with it the streams in flight on it: captures lost every ~1,000
    // logins (bench/RESULTS.md). Graceful close keeps the connection.
    layered_runtime: {
      layers: [{ name: 'token-tap', static_layer: { 'envoy.reloadable_features.ext_proc_graceful_grpc_close': true } }],
    },
    static_resources: {
      listeners: [
        {
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
                            {
                              name: 'not_an_idp_route',
                              match: { prefix: '/' },
                              direct_response: { status: 404, body: { inline_string: 'token-tap: no IdP route here; token routes are /idp/<name>/token\n' } },
                              typed_per_filter_config: {
                                [EXT_PROC_FILTER]: {
                                  '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
                                  disabled: true,
                                },
                              },
                            },
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
        },
        ...(options.ready ? [readinessListener(options.ready, SIDECAR_CLUSTER)] : []),
      ],
      clusters: [
        ...options.idps.map((idp) => upstreamCluster(`idp_${idp.name}`, idp.tokenUrl, caFile)),
        ...profiles.map((profile) => upstreamCluster(`idp_${profile.name}_userinfo`, profile.profileUrl, caFile)),
        sidecarCluster(options.sidecar, options.sidecarMaxStreams ?? DEFAULT_SIDECAR_MAX_STREAMS, options.sidecarTls),
        ...(options.oktaHook ? [oktaHookCluster(options.oktaHook)] : []),
      ],
    },
  };
}

export function hookLimitText(limit: RateLimit | undefined): string {
  return limit ? `${describeRateLimit(limit)}, per client address (429 beyond)` : 'off';
}

/** Where the client address of the hook's per-client buckets comes from, for the rendered header. */
function clientAddressText(hops: number | undefined): string {
  return hops
    ? `the address ${hops} hop(s) from the right of X-Forwarded-For (--xff-trusted-hops), else the connection's`
    : "the connection's own address (behind a load balancer that is the balancer's: see --xff-trusted-hops)";
}

export function renderEnvoyYaml(options: EnvoyConfigOptions): string {
  // Every value is one comment line: a control character in one (a newline in a socket path) is
  // escaped, so it cannot end the comment and add YAML of its own.
  const comments = [
    `Envoy bootstrap rendered by token-tap envoy-config (mode: ${options.mode}).`,
    `Okta's IdP token URL: ${options.tls ? 'https' : 'http'}://<this host>:${options.listen.port}/idp/<name>/token${options.tls ? '' : ' (Okta requires https: put TLS in front, or render with --tls-cert/--tls-key)'}`,
    `IdPs: ${options.idps.map((idp) => `${idp.name} -> ${idp.tokenUrl.origin}${idp.tokenUrl.pathname}`).join(', ')}`,
    ...((options.profiles ?? []).length > 0
      ? [`Profile routes (/idp/<name>/userinfo): ${options.profiles!.map((profile) => `${profile.name} -> ${profile.profileUrl.origin}${profile.profileUrl.pathname}`).join(', ')}`]
      : []),
    `Sidecar (ext_proc): ${formatListenAddress(options.sidecar)}${options.sidecarTls ? ' (mTLS)' : ''}; admin: ${formatHostPort(options.admin)}`,
    ...(options.ready ? [`Readiness: GET http://${formatHostPort(options.ready)}${ENVOY_READY_PATH} answers 200 only while Envoy sees the sidecar healthy (point the readiness probe here)`] : []),
    ...(options.oktaHook ? [`Okta token inline hook: POST /okta/token-hook -> ${formatHostPort(options.oktaHook)}`] : []),
    ...(options.oktaHook ? [`Okta hook rate limit: ${hookLimitText(hookRateLimitOf(options))}`] : []),
    ...(options.oktaHook && hookRateLimitOf(options) ? [`Client address: ${clientAddressText(options.xffTrustedHops)}`] : []),
    ...(options.allowSources && options.allowSources.length > 0 ? [`Source allow-list: ${options.allowSources.map((cidr) => `${cidr.address}/${cidr.prefixLength}`).join(', ')} (403 for anyone else)`] : []),
    ...(options.tokenRateLimit ? [`Token route rate limit: ${options.tokenRateLimit.requests} per ${options.tokenRateLimit.perSeconds}s per IdP (429 beyond)`] : []),
  ];
  const header = `${comments.map((line) => `# ${escapeControlCharacters(line)}`).join('\n')}\n`;
  return header + stringify(renderEnvoyConfig(options), { lineWidth: 0 });
}
