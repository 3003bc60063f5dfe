// The HTTP filters on Okta's listener that are token-tap's own: ext_proc, which hands each token
// response to the sidecar, and the source allow-list. Order in the chain is the listener's (listener.ts).
import { SIDECAR_CLUSTER } from './clusters.js';
import type { Cidr, EnvoyConfigOptions, ProcessingMode } from './options.js';

export const EXT_PROC_FILTER = 'envoy.filters.http.ext_proc';
const RBAC_FILTER = 'envoy.filters.http.rbac';

export function processingMode(mode: ProcessingMode) {
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

export function extProcFilter(options: EnvoyConfigOptions) {
  const observability = options.mode === 'observability';
  return {
    name: EXT_PROC_FILTER,
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
      grpc_service: { envoy_grpc: { cluster_name: SIDECAR_CLUSTER }, timeout: '1s' },
      // Fail open: a sidecar that is down, slow or broken never breaks a login.
      failure_mode_allow: true,
      processing_mode: processingMode(options.mode),
      ...(observability ? { observability_mode: true, deferred_close_timeout: '2s' } : { message_timeout: `${(options.messageTimeoutMs ?? 200) / 1000}s` }),
      stat_prefix: 'token_tap',
    },
  };
}

/**
 * Only these networks reach the listener at all. The connection's own address (direct_remote_ip),
 * never X-Forwarded-For, which a caller writes itself: behind a load balancer that is the
 * balancer's address, so allow-list there or keep the client address (PROXY protocol).
 */
export function sourceAllowList(sources: Cidr[]) {
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
