// The routes on Okta's listener: one relay per IdP token endpoint (and profile endpoint), each
// telling the sidecar which IdP answered, and a 404 for anything else. The hook's routes are okta-hook.ts's.
import { IDP_METADATA_KEY, profileRoutePath, ROUTE_METADATA_KEY, SUBJECT_FIELD_METADATA_KEY, tokenRoutePath } from '../contract.js';
import { EXT_PROC_FILTER, processingMode } from './filters.js';
import type { IdpRoute, ProcessingMode, ProfileRoute } from './options.js';
import { RATE_LIMIT_FILTER, routeTokenBucket, type RateLimit } from './rate-limit.js';

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

export function tokenRoute(idp: IdpRoute, rateLimit: RateLimit | undefined) {
  // The metadata tells the sidecar which IdP this response came from.
  const route = relayRoute(`idp_${idp.name}_token`, tokenRoutePath(idp.name), `idp_${idp.name}`, idp.tokenUrl, {
    grpc_initial_metadata: [{ key: IDP_METADATA_KEY, value: idp.name }],
  });
  // One bucket per token route; beyond it Envoy answers 429 and the IdP never sees the call.
  if (rateLimit)
    (route.typed_per_filter_config as Record<string, unknown>)[RATE_LIMIT_FILTER] = routeTokenBucket(
      `token_rate_limit_${idp.name}`,
      'token_tap.token_rate_limit',
      rateLimit,
    );
  return route;
}

export function profileRoute(profile: ProfileRoute, mode: ProcessingMode) {
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

/** The catch-all, last: a path that is no IdP's reaches no upstream and no sidecar. */
export function notAnIdpRoute() {
  return {
    name: 'not_an_idp_route',
    match: { prefix: '/' },
    direct_response: { status: 404, body: { inline_string: 'token-tap: no IdP route here; token routes are /idp/<name>/token\n' } },
    typed_per_filter_config: {
      [EXT_PROC_FILTER]: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
        disabled: true,
      },
    },
  };
}
