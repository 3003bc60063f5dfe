// Envoy's local rate limit (envoy.filters.http.local_ratelimit) as token-tap renders it: the filter
// in the chain without a bucket of its own, and per route that sets one either one token bucket or a
// bucket per client address. Beyond the bucket Envoy answers 429 itself; the upstream (IdP or
// sidecar) never sees the call.

export const RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
const LOCAL_RATE_LIMIT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';

export interface RateLimit {
  requests: number;
  perSeconds: number;
  /** Calls let through at once before the rate applies (the bucket's size); default `requests`. */
  burst?: number;
}

const UNITS = { s: 1, m: 60, h: 3600 } as const;

/** `N/s`, `N/m` (or `N/h`) from --token-rate-limit. */
export function parseRateLimit(text: string): RateLimit {
  const match = /^\s*(\d{1,9})\s*\/\s*(s|m|h)\s*$/.exec(text);
  const requests = match ? Number(match[1]) : 0;
  if (!match || requests < 1) throw new Error(`--token-rate-limit must be N/s, N/m or N/h with N at least 1 (for example 50/s), got "${text}"`);
  return { requests, perSeconds: UNITS[match[2] as keyof typeof UNITS] };
}

/**
 * Okta calls the hook at most once per token request to a custom authorization server whose policy
 * rule names it, and all custom authorization servers of an org share one per-minute rate limit
 * (Okta's "How the Rate Limits Work for Authorization Servers"; its size depends on the
 * subscription and shows in the org's Rate Limit dashboard); Okta waits 3 s for an answer and does
 * not retry. The limit is per client address (routePerClientBuckets), and an org's calls come from
 * Okta's few egress addresses, each carrying at most the org's whole rate: 100 a second (6,000 a
 * minute) with 200 at once is meant to sit well above that (raise it when the dashboard shows
 * more), so only a flood from one address is refused, and never Okta's calls for another's flood.
 * Okta, refused, issues its tokens unchanged, as for any failed hook call.
 */
export const DEFAULT_OKTA_HOOK_RATE_LIMIT: Required<RateLimit> = { requests: 100, perSeconds: 1, burst: 200 };

/** `N/s[:BURST]` (or /m, /h) from --okta-hook-rate-limit; `off` or `0`: no limit (false). */
export function parseHookRateLimit(text: string): Required<RateLimit> | false {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === 'off' || trimmed === '0') return false;
  const match = /^(\d{1,9})\s*\/\s*(s|m|h)(?:\s*:\s*(\d{1,9}))?$/.exec(trimmed);
  const requests = match ? Number(match[1]) : 0;
  const burst = match?.[3] === undefined ? requests : Number(match[3]);
  if (!match || requests < 1 || burst < 1) {
    throw new Error(`--okta-hook-rate-limit must be N/s, N/m or N/h with N at least 1, optionally :BURST (for example 100/s:200), or off; got "${text}"`);
  }
  return { requests, perSeconds: UNITS[match[2] as keyof typeof UNITS], burst };
}

/** The filter in the chain: no bucket here, so only routes with a bucket of their own are limited. */
export function rateLimitFilter(statPrefix: string) {
  return { name: RATE_LIMIT_FILTER, typed_config: { '@type': LOCAL_RATE_LIMIT_TYPE, stat_prefix: statPrefix } };
}

// A fresh object each: a shared one would become a YAML anchor, which not every reader takes.
function tokenBucket({ requests, perSeconds, burst }: RateLimit) {
  return { max_tokens: burst ?? requests, tokens_per_fill: requests, fill_interval: `${perSeconds}s` };
}

function enabledForAll(runtimeKey: string) {
  const everyone = () => ({ default_value: { numerator: 100, denominator: 'HUNDRED' } });
  return {
    filter_enabled: { ...everyone(), runtime_key: `${runtimeKey}.enabled` },
    filter_enforced: { ...everyone(), runtime_key: `${runtimeKey}.enforced` },
  };
}

/**
 * One bucket for a route, shared by Envoy's workers and by every caller: it holds `burst` calls and
 * gains `requests` every `perSeconds`. The runtime keys let an operator switch it off or to
 * report-only in place.
 */
export function routeTokenBucket(statPrefix: string, runtimeKey: string, limit: RateLimit) {
  return { '@type': LOCAL_RATE_LIMIT_TYPE, stat_prefix: statPrefix, token_bucket: tokenBucket(limit), ...enabledForAll(runtimeKey) };
}

/** The descriptor key Envoy's `remote_address` rate limit action fills with the client's address. */
export const CLIENT_ADDRESS_KEY = 'remote_address';

/**
 * Client buckets Envoy keeps at once (Envoy Gateway's choice too). Past it the least recently seen
 * client's bucket is dropped, and that client starts again with a full one: a caller with more
 * addresses than this is not held back by them, but no caller ever empties another's bucket.
 */
export const MAX_CLIENT_BUCKETS = 10_000;

/** The route's `rate_limits` (RouteAction) for routePerClientBuckets: one descriptor, the client's address. */
export function clientAddressRateLimits() {
  return [{ actions: [{ remote_address: {} }] }];
}

/**
 * A bucket per client address for a route (which needs clientAddressRateLimits() as its
 * `rate_limits`): a descriptor entry with a key and no value makes Envoy (1.34+) create a bucket
 * for each value it meets. The address is the listener's downstream remote address: the TCP peer
 * with use_remote_address and no trusted hops, so behind a load balancer the balancer's unless
 * xff_num_trusted_hops takes it from X-Forwarded-For. Only a call with no IP address (none on a
 * TCP listener) falls to the route's own bucket, which per-client calls leave alone.
 */
export function routePerClientBuckets(statPrefix: string, runtimeKey: string, limit: RateLimit) {
  return {
    ...routeTokenBucket(statPrefix, runtimeKey, limit),
    descriptors: [{ entries: [{ key: CLIENT_ADDRESS_KEY }], token_bucket: tokenBucket(limit) }],
    always_consume_default_token_bucket: false,
    max_dynamic_descriptors: MAX_CLIENT_BUCKETS,
  };
}

export function describeRateLimit({ requests, perSeconds, burst }: RateLimit): string {
  const per = perSeconds === 1 ? 's' : perSeconds === 60 ? 'min' : perSeconds === 3600 ? 'h' : `${perSeconds}s`;
  return `${requests}/${per}${burst !== undefined && burst !== requests ? `, burst ${burst}` : ''}`;
}
