// Envoy's readiness listener: GET /ready answers 200 only while Envoy itself sees the sidecar
// healthy (its active gRPC health check has passed), 503 otherwise. Envoy's health_check filter
// does the check in the worker that serves the request, against the same host set ext_proc picks
// the sidecar from, so "ready" means the next token response will reach the sidecar. The pod's or
// the stack's readiness probe asks this listener: a sidecar the probe of its own calls ready
// (/readyz) but that Envoy has not health-checked yet would let in logins Envoy relays uncaptured
// (panic threshold 0: an unhealthy sidecar is not tried). Measured in test/e2e/readiness.test.ts
// (docs/failure-behaviour.md, the restart row).
import type { HostPort } from '../config/values.js';
import { ENVOY_READY_PATH } from '../contract.js';

const HEALTH_CHECK_FILTER = 'envoy.filters.http.health_check';
/** Envoy's own admin, as a cluster: only its /stats/prometheus is routed to it, from this listener. */
export const ADMIN_STATS_CLUSTER = 'token_tap_admin';
export const STATS_PATH = '/stats/prometheus';

/**
 * The cluster the readiness listener sends `GET /stats/prometheus` to: Envoy's admin, which stays on
 * its own (loopback) address, so Prometheus can scrape Envoy's stats and nothing else of the admin.
 */
export function adminStatsCluster(admin: HostPort) {
  return {
    name: ADMIN_STATS_CLUSTER,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: ADMIN_STATS_CLUSTER,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: admin.host, port_value: admin.port } } } }] }],
    },
  };
}

/** The listener; `sidecarCluster` must be healthy (100 % of its hosts) for a 200. It also serves Envoy's /stats/prometheus. */
export function readinessListener(address: HostPort, sidecarCluster: string) {
  return {
    name: 'token_tap_ready',
    address: { socket_address: { address: address.host, port_value: address.port } },
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'token_tap_ready',
              codec_type: 'AUTO',
              route_config: {
                name: 'token_tap_ready',
                virtual_hosts: [
                  {
                    name: 'ready',
                    domains: ['*'],
                    // The health_check filter answers /ready itself; the stats go to the admin (GET only); anything else is not here.
                    routes: [
                      {
                        match: { path: STATS_PATH, headers: [{ name: ':method', string_match: { exact: 'GET' } }] },
                        route: { cluster: ADMIN_STATS_CLUSTER, timeout: '5s' },
                      },
                      {
                        match: { prefix: '/' },
                        direct_response: { status: 404, body: { inline_string: `token-tap: only GET ${ENVOY_READY_PATH} and GET ${STATS_PATH} here\n` } },
                      },
                    ],
                  },
                ],
              },
              http_filters: [
                {
                  name: HEALTH_CHECK_FILTER,
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck',
                    pass_through_mode: false,
                    headers: [{ name: ':path', string_match: { exact: ENVOY_READY_PATH } }],
                    cluster_min_healthy_percentages: { [sidecarCluster]: { value: 100 } },
                  },
                },
                { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
              ],
            },
          },
        ],
      },
    ],
  };
}
