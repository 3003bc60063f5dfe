// The sidecar's cluster in the rendered Envoy config: health-checked over grpc.health.v1, out of
// the way at once when unhealthy, and capped by circuit breakers.
import { expect } from 'chai';
import { SIDECAR_CLUSTER } from '../../src/envoyconfig/clusters.js';
import { parseIdpFlag } from '../../src/envoyconfig/flags.js';
import { renderEnvoyConfig } from '../../src/envoyconfig/render.js';
import { ADMIN_STATS_CLUSTER, STATS_PATH } from '../../src/envoyconfig/readiness.js';
import { ENVOY_READY_PATH, EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';

const base = {
  listen: { host: '0.0.0.0', port: 8080 },
  sidecar: { host: '127.0.0.1', port: 50051 },
  admin: { host: '127.0.0.1', port: 9901 },
  idps: [parseIdpFlag('a=http://127.0.0.1:3000/token')],
};

function sidecarCluster(config: Record<string, unknown>): any {
  return (config as any).static_resources.clusters.find((cluster: { name: string }) => cluster.name === SIDECAR_CLUSTER);
}

describe('envoyconfig/render: the sidecar cluster', () => {
  it('is health-checked with grpc.health.v1 for the ext_proc service the sidecar reports on', () => {
    const cluster = sidecarCluster(renderEnvoyConfig({ ...base, mode: 'observability' }));
    expect(cluster.health_checks).to.have.length(1);
    expect(cluster.health_checks[0].grpc_health_check).to.deep.equal({ service_name: EXT_PROC_HEALTH_SERVICE });
    expect(cluster.health_checks[0]).to.include({ interval: '1s', no_traffic_interval: '1s', healthy_threshold: 1 });
    expect(cluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config).to.have.property(
      'http2_protocol_options',
    );
  });

  it('is not tried while unhealthy (panic threshold 0), and health changes apply at once', () => {
    const cluster = sidecarCluster(renderEnvoyConfig({ ...base, mode: 'buffered' }));
    expect(cluster.common_lb_config).to.deep.equal({ healthy_panic_threshold: { value: 0 }, update_merge_window: '0s' });
  });

  it('has circuit breakers of 4096 streams by default, or as many as asked for', () => {
    const byDefault = sidecarCluster(renderEnvoyConfig({ ...base, mode: 'observability' })).circuit_breakers.thresholds[0];
    expect(byDefault).to.include({ priority: 'DEFAULT', max_requests: 4096, max_pending_requests: 4096, max_connections: 4096 });
    const sized = sidecarCluster(renderEnvoyConfig({ ...base, mode: 'observability', sidecarMaxStreams: 5000 })).circuit_breakers.thresholds[0];
    expect(sized).to.include({ max_requests: 5000, max_pending_requests: 5000 });
  });

  it('gives Envoy a readiness listener that answers 200 only with the sidecar cluster healthy, when asked for one', () => {
    const listeners = (options: object) =>
      (renderEnvoyConfig({ ...base, mode: 'observability', ...options }) as any).static_resources.listeners as Array<{
        name: string;
        address: any;
        filter_chains: any[];
      }>;
    expect(listeners({}).map((listener) => listener.name)).to.deep.equal(['okta_ingress']);
    const ready = listeners({ ready: { host: '0.0.0.0', port: 9902 } }).find((listener) => listener.name === 'token_tap_ready')!;
    expect(ready.address).to.deep.equal({ socket_address: { address: '0.0.0.0', port_value: 9902 } });
    const hcm = ready.filter_chains[0].filters[0].typed_config;
    const check = hcm.http_filters[0].typed_config;
    expect(hcm.http_filters[0].name).to.equal('envoy.filters.http.health_check');
    expect(check).to.deep.include({ pass_through_mode: false, cluster_min_healthy_percentages: { [SIDECAR_CLUSTER]: { value: 100 } } });
    expect(check.headers).to.deep.equal([{ name: ':path', string_match: { exact: ENVOY_READY_PATH } }]);
    // Besides, only GET /stats/prometheus, to the admin (for Prometheus); nothing else, and ext_proc is not on it.
    const routes = hcm.route_config.virtual_hosts[0].routes;
    expect(routes).to.have.length(2);
    expect(routes[0]).to.deep.equal({
      match: { path: STATS_PATH, headers: [{ name: ':method', string_match: { exact: 'GET' } }] },
      route: { cluster: ADMIN_STATS_CLUSTER, timeout: '5s' },
    });
    expect(routes[1].direct_response.status).to.equal(404);
    expect(JSON.stringify(hcm)).to.not.contain('ext_proc');
    const clusters = (renderEnvoyConfig({ ...base, mode: 'observability', ready: { host: '0.0.0.0', port: 9902 } }) as any).static_resources.clusters as Array<{
      name: string;
      load_assignment: any;
    }>;
    const admin = clusters.find((cluster) => cluster.name === ADMIN_STATS_CLUSTER)!;
    expect(admin.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({
      address: base.admin.host,
      port_value: base.admin.port,
    });
    expect(
      ((renderEnvoyConfig({ ...base, mode: 'observability' }) as any).static_resources.clusters as Array<{ name: string }>).map((cluster) => cluster.name),
    ).to.not.include(ADMIN_STATS_CLUSTER);
  });
});
