// The upstreams Envoy dials: each IdP endpoint (TLS checked against a CA bundle) and the sidecar's
// ext_proc server, health-checked and bounded so that a slow or missing sidecar fails open at once.
import { EXT_PROC_HEALTH_SERVICE } from '../contract.js';
import { isSocket, type ListenAddress } from '../config/values.js';
import { listenAddress, socketAddress } from './addresses.js';
import type { EnvoyConfigOptions } from './options.js';

export const SIDECAR_CLUSTER = 'token_tap_sidecar';
export const DEFAULT_CA_FILE = '/etc/ssl/certs/ca-certificates.crt';

// Kept in step with ops/health.ts, which answers for it.
export const DEFAULT_SIDECAR_MAX_STREAMS = 4096;

/** Below nghttp2's reset burst (1,000) in the sidecar; see the sidecar cluster. */
export const SIDECAR_STREAMS_PER_CONNECTION = 500;

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

export function upstreamCluster(name: string, url: URL, caFile: string) {
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

export function sidecarCluster(sidecar: ListenAddress, maxStreams: number, tls: EnvoyConfigOptions['sidecarTls']) {
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
