// Envoy's side of Okta's token inline hook: the route POST /okta/token-hook on Okta's listener (so
// TLS when the listener has it) to the sidecar's hook listener, without ext_proc, with Okta's
// request size limit, a timeout below Okta's 3 s and a token bucket per client address well above
// Okta's own rate (rate-limit.ts: a flood gets 429 from Envoy, not the sidecar's time, and no
// caller can empty Okta's bucket); anything else on that path gets 405.
import type { HostPort } from '../config/values.js';
import { OKTA_HOOK_PATH } from '../contract.js';
import { EXT_PROC_FILTER } from './filters.js';
import {
  clientAddressRateLimits,
  DEFAULT_OKTA_HOOK_RATE_LIMIT,
  describeRateLimit,
  RATE_LIMIT_FILTER,
  rateLimitFilter,
  routePerClientBuckets,
  type RateLimit,
} from './rate-limit.js';

export const OKTA_HOOK_CLUSTER = 'token_tap_okta_hook';
/** Okta sends less than 256 KB; past it the buffer filter answers 413 before the sidecar sees anything. */
export const OKTA_HOOK_MAX_REQUEST_BYTES = 256 * 1024;
/** Okta waits 3 s and then issues its tokens unchanged; a slower answer is wasted work. */
export const OKTA_HOOK_TIMEOUT = '2.5s';

const BUFFER_FILTER = 'envoy.filters.http.buffer';

const extProcOff = {
  [EXT_PROC_FILTER]: {
    '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
    disabled: true,
  },
};

/** The hook route's buckets, one per client address; Envoy counts refusals in `okta_hook_rate_limit.http_local_rate_limit.rate_limited`. */
export function hookBuckets(limit: RateLimit) {
  return routePerClientBuckets('okta_hook_rate_limit', 'token_tap.okta_hook_rate_limit', limit);
}

/** The hook's routes, with a token bucket per client on the POST route unless `rateLimit` is undefined; they go before the catch-all. */
export function oktaHookRoutes(rateLimit?: RateLimit) {
  return [
    {
      name: 'okta_token_hook',
      match: { path: OKTA_HOOK_PATH, headers: [{ name: ':method', string_match: { exact: 'POST' } }] },
      route: { cluster: OKTA_HOOK_CLUSTER, timeout: OKTA_HOOK_TIMEOUT, ...(rateLimit ? { rate_limits: clientAddressRateLimits() } : {}) },
      typed_per_filter_config: {
        ...extProcOff,
        [BUFFER_FILTER]: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute',
          buffer: { max_request_bytes: OKTA_HOOK_MAX_REQUEST_BYTES },
        },
        // Before the buffer filter in the chain: a refused call is not read.
        ...(rateLimit ? { [RATE_LIMIT_FILTER]: hookBuckets(rateLimit) } : {}),
      },
    },
    {
      name: 'okta_token_hook_not_post',
      match: { path: OKTA_HOOK_PATH },
      direct_response: { status: 405, body: { inline_string: 'token-tap: the Okta token hook takes POST only\n' } },
      typed_per_filter_config: extProcOff,
    },
  ];
}

/** The buffer filter, off everywhere but on the hook route (which sets its limit). Goes before the router. */
export function oktaHookFilters() {
  return [
    {
      name: BUFFER_FILTER,
      disabled: true,
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer',
        max_request_bytes: OKTA_HOOK_MAX_REQUEST_BYTES,
      },
    },
  ];
}

export function oktaHookCluster(hook: HostPort) {
  const ip = /^\d{1,3}(\.\d{1,3}){3}$/.test(hook.host) || hook.host.includes(':');
  return {
    name: OKTA_HOOK_CLUSTER,
    type: ip ? 'STATIC' : 'STRICT_DNS',
    connect_timeout: '0.25s',
    // Plain HTTP/1.1 to the sidecar in the pod. Envoy drops idle connections before the sidecar's
    // keep-alive timeout (75 s) would, so no call goes out on a connection being closed.
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        explicit_http_config: { http_protocol_options: {} },
        common_http_protocol_options: { idle_timeout: '30s' },
      },
    },
    load_assignment: {
      cluster_name: OKTA_HOOK_CLUSTER,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: hook.host, port_value: hook.port } } } }] }],
    },
  };
}

/** The hook route's limit: the default unless given, none when switched off. */
export function hookRateLimitOf(options: { oktaHookRateLimit?: RateLimit | false }): RateLimit | undefined {
  return options.oktaHookRateLimit === false ? undefined : (options.oktaHookRateLimit ?? DEFAULT_OKTA_HOOK_RATE_LIMIT);
}

/** The hook's limit as the rendered headers state it (envoy-config and envoy-gateway). */
export function hookLimitText(limit: RateLimit | undefined): string {
  return limit ? `${describeRateLimit(limit)}, per client address (429 beyond)` : 'off';
}

const GATEWAY_RATE_LIMIT_UNITS: Record<number, string> = { 1: 'Second', 60: 'Minute', 3600: 'Hour' };

/**
 * Envoy Gateway: a local rate limit (BackendTrafficPolicy) on the hook's HTTPRoute rule alone, a
 * bucket per client address: `sourceCIDR` of type Distinct over all of IPv4 and all of IPv6 (Envoy
 * Gateway v1.9 renders remote_address_match actions and a wildcard descriptor entry). No rule
 * without clientSelectors, so no bucket shared by every caller. The client
 * address is the gateway listener's (the load balancer's unless ClientTrafficPolicy's
 * clientIPDetection says otherwise). Envoy Gateway's buckets hold one unit's requests (no separate
 * burst), per gateway replica.
 */
export function hookRateLimitPolicy(where: { namespace: string; labels: Record<string, string>; route: string; rule: string }, limit: RateLimit) {
  const unit = GATEWAY_RATE_LIMIT_UNITS[limit.perSeconds];
  if (!unit) throw new Error(`the Okta hook rate limit must be per second, minute or hour for Envoy Gateway, got per ${limit.perSeconds}s`);
  const perClient = (cidr: string) => ({ clientSelectors: [{ sourceCIDR: { type: 'Distinct', value: cidr } }], limit: { requests: limit.requests, unit } });
  return {
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'BackendTrafficPolicy',
    metadata: { name: 'token-tap-okta-hook', namespace: where.namespace, labels: where.labels },
    spec: {
      targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: where.route, sectionName: where.rule }],
      rateLimit: { type: 'Local', local: { rules: [perClient('0.0.0.0/0'), perClient('::/0')] } },
    },
  };
}

/**
 * Istio: EnvoyFilter patches for the local rate limit filter on the gateway's listeners (no bucket
 * of its own) and, on the hook route of each virtual host (matched by host and route name), the
 * same per-client buckets as envoy-config renders: the route's remote_address rate limit action and
 * the wildcard descriptor. Needs an Istio whose Envoy is 1.34 or later (Istio 1.26+: dynamic
 * descriptors). The client address is the gateway's (the load balancer's unless
 * gatewayTopology.numTrustedProxies is set).
 */
export function istioHookRateLimit(where: { hostnames: string[]; gatewayPort: number; route: string }, limit: RateLimit) {
  return [
    {
      applyTo: 'HTTP_FILTER',
      match: {
        context: 'GATEWAY',
        listener: { filterChain: { filter: { name: 'envoy.filters.network.http_connection_manager', subFilter: { name: 'envoy.filters.http.router' } } } },
      },
      patch: { operation: 'INSERT_BEFORE', value: rateLimitFilter('token_tap_rate_limit') },
    },
    ...where.hostnames.map((hostname) => ({
      applyTo: 'HTTP_ROUTE',
      match: { context: 'GATEWAY', routeConfiguration: { vhost: { name: `${hostname}:${where.gatewayPort}`, route: { name: where.route } } } },
      patch: {
        operation: 'MERGE',
        value: { route: { rate_limits: clientAddressRateLimits() }, typed_per_filter_config: { [RATE_LIMIT_FILTER]: hookBuckets(limit) } },
      },
    })),
  ];
}
