// Renders a complete Envoy bootstrap from a short list of IdPs. Pure: options in, a config
// object (and its YAML) out. Every output must pass `envoy --mode validate`. This file assembles the
// bootstrap; Okta's listener (listener.ts: routes.ts, filters.ts) and the clusters (clusters.ts) are built apart.
import { stringify } from 'yaml';
import { escapeControlCharacters, formatHostPort, formatListenAddress } from '../config/values.js';
import { ENVOY_READY_PATH } from '../contract.js';
import { socketAddress } from './addresses.js';
import { DEFAULT_CA_FILE, DEFAULT_SIDECAR_MAX_STREAMS, SIDECAR_CLUSTER, sidecarCluster, upstreamCluster } from './clusters.js';
import { oktaIngressListener } from './listener.js';
import { hookLimitText, hookRateLimitOf, oktaHookCluster } from './okta-hook.js';
import type { EnvoyConfigOptions } from './options.js';
import { adminStatsCluster, readinessListener, STATS_PATH } from './readiness.js';

// The envoy-config command (cli/main.ts) and the tests that name a processing mode import these from here.
export type { Cidr, IdpRoute, ProcessingMode, ProfileRoute } from './options.js';
export { parseCidr, parseIdpFlag, parseProfileFlag } from './flags.js';
export { parseHookRateLimit, parseRateLimit, type RateLimit } from './rate-limit.js';

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
      listeners: [oktaIngressListener(options, hookRateLimit), ...(options.ready ? [readinessListener(options.ready, SIDECAR_CLUSTER)] : [])],
      clusters: [
        ...options.idps.map((idp) => upstreamCluster(`idp_${idp.name}`, idp.tokenUrl, caFile)),
        ...profiles.map((profile) => upstreamCluster(`idp_${profile.name}_userinfo`, profile.profileUrl, caFile)),
        sidecarCluster(options.sidecar, options.sidecarMaxStreams ?? DEFAULT_SIDECAR_MAX_STREAMS, options.sidecarTls),
        ...(options.oktaHook ? [oktaHookCluster(options.oktaHook)] : []),
        ...(options.ready ? [adminStatsCluster(options.admin)] : []),
      ],
    },
  };
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
      ? [
          `Profile routes (/idp/<name>/userinfo): ${options.profiles!.map((profile) => `${profile.name} -> ${profile.profileUrl.origin}${profile.profileUrl.pathname}`).join(', ')}`,
        ]
      : []),
    `Sidecar (ext_proc): ${formatListenAddress(options.sidecar)}${options.sidecarTls ? ' (mTLS)' : ''}; admin: ${formatHostPort(options.admin)}`,
    ...(options.ready
      ? [
          `Readiness: GET http://${formatHostPort(options.ready)}${ENVOY_READY_PATH} answers 200 only while Envoy sees the sidecar healthy (point the readiness probe here); GET ${STATS_PATH} there is Envoy's stats for Prometheus`,
        ]
      : []),
    ...(options.oktaHook ? [`Okta token inline hook: POST /okta/token-hook -> ${formatHostPort(options.oktaHook)}`] : []),
    ...(options.oktaHook ? [`Okta hook rate limit: ${hookLimitText(hookRateLimitOf(options))}`] : []),
    ...(options.oktaHook && hookRateLimitOf(options) ? [`Client address: ${clientAddressText(options.xffTrustedHops)}`] : []),
    ...(options.allowSources && options.allowSources.length > 0
      ? [`Source allow-list: ${options.allowSources.map((cidr) => `${cidr.address}/${cidr.prefixLength}`).join(', ')} (403 for anyone else)`]
      : []),
    ...(options.tokenRateLimit
      ? [`Token route rate limit: ${options.tokenRateLimit.requests} per ${options.tokenRateLimit.perSeconds}s per IdP (429 beyond)`]
      : []),
  ];
  const header = `${comments.map((line) => `# ${escapeControlCharacters(line)}`).join('\n')}\n`;
  return header + stringify(renderEnvoyConfig(options), { lineWidth: 0 });
}
