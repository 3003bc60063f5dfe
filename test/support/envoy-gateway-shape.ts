// A bootstrap shaped like what Envoy Gateway generates from the resources `token-tap envoy-gateway`
// renders: the HTTPRoute's rules become routes named and tagged the way Envoy Gateway names and
// tags them (route metadata filter_metadata["envoy-gateway"].resources with the rule's sectionName),
// and the EnvoyExtensionPolicy becomes one ext_proc filter, disabled on the listener and enabled
// on each targeted route by an empty FilterConfig, with the policy's processing mode, response
// attributes, failOpen, messageTimeout and shadowMode (observability_mode). A BackendTrafficPolicy's
// local rate limit becomes the local_ratelimit filter (max_dynamic_descriptors 10,000) and on each
// targeted route Envoy Gateway v1.9's per-route config (internal/xds/translator/local_ratelimit.go):
// the rule without clientSelectors as the route's bucket (else one of 2^32-1 a second), a
// descriptor per rule with clientSelectors, sourceCIDR as remote_address_match actions (the CIDR
// itself as value; with Distinct also the address, a wildcard entry: a bucket per client), each
// bucket one unit's requests refilled each unit, never the route's bucket as well. The listener
// uses the connection's address (use_remote_address, Envoy Gateway's default without
// clientIPDetection). No per-route gRPC initial metadata: Envoy Gateway cannot set it. A small
// translator of our own, not Envoy Gateway.
import { stringify } from 'yaml';

type Resource = Record<string, any>;

const RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
const FILTER = (namespace: string, name: string) => `envoy.filters.http.ext_proc/envoyextensionpolicy/${namespace}/${name}/extproc/0`;

function socket(host: string, port: number) {
  return { socket_address: { address: host, port_value: port } };
}

function cluster(name: string, host: string, port: number, http2 = false) {
  return {
    name,
    type: /^\d+\.\d+\.\d+\.\d+$/.test(host) ? 'STATIC' : 'STRICT_DNS',
    connect_timeout: '1s',
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: socket(host, port) } }] }] },
    ...(http2
      ? {
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }
      : {}),
  };
}

const UNIT_SECONDS: Record<string, number> = { Second: 1, Minute: 60, Hour: 3600 };

function bucket(limit: Resource) {
  return { max_tokens: limit.requests, tokens_per_fill: limit.requests, fill_interval: `${UNIT_SECONDS[limit.unit]}s` };
}

/** A BackendTrafficPolicy's local rate limit as Envoy Gateway v1.9 configures the targeted route. */
function localRateLimit(local: Resource) {
  const rules = local.rules as Resource[];
  const routeRule = rules.find((rule) => !rule.clientSelectors?.length);
  const selected = rules.filter((rule) => rule.clientSelectors?.length);
  const rateLimits: Resource[] = [];
  const descriptors: Resource[] = [];
  selected.forEach((rule, index) => {
    const actions: Resource[] = [];
    const entries: Resource[] = [];
    for (const selector of rule.clientSelectors as Resource[]) {
      const source = selector.sourceCIDR;
      if (!source || Object.keys(selector).length !== 1) throw new Error('only sourceCIDR client selectors are translated here');
      const [prefix, length] = (source.value as string).split('/');
      const addressMatcher = { ranges: [{ address_prefix: prefix, prefix_len: Number(length) }], ...(source.invert ? { invert_match: true } : {}) };
      actions.push({
        remote_address_match: { descriptor_key: `rule-${index}-masked-remote-address`, descriptor_value: source.value, address_matcher: addressMatcher },
      });
      entries.push({ key: `rule-${index}-masked-remote-address`, value: source.value });
      if (source.type === 'Distinct') {
        actions.push({
          remote_address_match: {
            descriptor_key: `rule-${index}-remote-address`,
            descriptor_value: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
            address_matcher: addressMatcher,
          },
        });
        entries.push({ key: `rule-${index}-remote-address` });
      }
    }
    rateLimits.push({ actions });
    descriptors.push({ entries, token_bucket: bucket(rule.limit) });
  });
  return {
    '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
    stat_prefix: 'http_local_rate_limiter',
    token_bucket: routeRule ? bucket(routeRule.limit) : { max_tokens: 4294967295, tokens_per_fill: 4294967295, fill_interval: '1s' },
    filter_enabled: { default_value: { numerator: 100, denominator: 'HUNDRED' } },
    filter_enforced: { default_value: { numerator: 100, denominator: 'HUNDRED' } },
    enable_x_ratelimit_headers: 'DRAFT_VERSION_03',
    ...(descriptors.length > 0 ? { descriptors } : {}),
    always_consume_default_token_bucket: false,
    ...(rateLimits.length > 0 ? { rate_limits: rateLimits } : {}),
  };
}

function seconds(duration: string): string {
  const match = /^(\d+)(ms|s)$/.exec(duration);
  if (!match) throw new Error(`duration ${duration}`);
  return match[2] === 'ms' ? `${Number(match[1]) / 1000}s` : `${match[1]}s`;
}

export interface ShapeOptions {
  resources: Resource[];
  listenPort: number;
  adminPort: number;
  /** Where the policy's ext_proc Service and the hook Service are reached here (loopback). */
  sidecarPort: number;
  hookPort: number;
}

export function envoyGatewayShapedBootstrap({ resources, listenPort, adminPort, sidecarPort, hookPort }: ShapeOptions): string {
  const route = resources.find((resource) => resource.kind === 'HTTPRoute')!;
  const policy = resources.find((resource) => resource.kind === 'EnvoyExtensionPolicy')!;
  const limits = resources.filter((resource) => resource.kind === 'BackendTrafficPolicy');
  const backends = new Map(resources.filter((resource) => resource.kind === 'Backend').map((backend) => [backend.metadata.name as string, backend]));
  const { namespace, name: routeName } = route.metadata;
  const targeted = new Set(
    (policy.spec.targetRefs as Resource[]).filter((ref) => ref.kind === 'HTTPRoute' && ref.name === routeName).map((ref) => ref.sectionName as string),
  );
  const limitOf = (rule: string) =>
    limits.find((limit) => (limit.spec.targetRefs as Resource[]).some((ref) => ref.kind === 'HTTPRoute' && ref.name === routeName && ref.sectionName === rule))
      ?.spec.rateLimit.local;
  const extProc = policy.spec.extProc[0];
  const filterName = FILTER(policy.metadata.namespace, policy.metadata.name);
  const clusters: Resource[] = [];
  const routes = (route.spec.rules as Resource[]).map((rule, index) => {
    const ref = rule.backendRefs[0];
    let clusterName: string;
    if (ref.kind === 'Backend') {
      const endpoint = backends.get(ref.name)!.spec.endpoints[0].fqdn;
      clusterName = `httproute/${namespace}/${routeName}/rule/${index}`;
      clusters.push(cluster(clusterName, endpoint.hostname, endpoint.port));
    } else {
      clusterName = `httproute/${namespace}/${routeName}/rule/${index}/hook`;
      clusters.push(cluster(clusterName, '127.0.0.1', hookPort));
    }
    const rewrite = (rule.filters as Resource[] | undefined)?.find((filter) => filter.type === 'URLRewrite')?.urlRewrite;
    return {
      name: `httproute/${namespace}/${routeName}/rule/${index}/match/0/*`,
      match: { path: rule.matches[0].path.value },
      metadata: { filter_metadata: { 'envoy-gateway': { resources: [{ kind: 'HTTPRoute', name: routeName, namespace, sectionName: rule.name }] } } },
      route: {
        cluster: clusterName,
        ...(rewrite ? { regex_rewrite: { pattern: { regex: '^/.*$' }, substitution: rewrite.path.replaceFullPath } } : {}),
        ...(rewrite?.hostname ? { host_rewrite_literal: rewrite.hostname } : {}),
      },
      ...(targeted.has(rule.name)
        ? { typed_per_filter_config: { [filterName]: { '@type': 'type.googleapis.com/envoy.config.route.v3.FilterConfig', config: {} } } }
        : {}),
      ...(limitOf(rule.name) ? { typed_per_filter_config: { [RATE_LIMIT_FILTER]: localRateLimit(limitOf(rule.name)) } } : {}),
    };
  });
  const body = extProc.processingMode.response.body as string;
  const extProcCluster = `envoyextensionpolicy/${policy.metadata.namespace}/${policy.metadata.name}/0/grpc-backend-0`;
  clusters.push(cluster(extProcCluster, '127.0.0.1', sidecarPort, true));
  const config = {
    admin: { address: socket('127.0.0.1', adminPort) },
    static_resources: {
      listeners: [
        {
          name: 'eg',
          address: socket('127.0.0.1', listenPort),
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                    stat_prefix: 'eg',
                    use_remote_address: true,
                    route_config: { name: 'eg', virtual_hosts: [{ name: 'eg', domains: ['*'], routes }] },
                    http_filters: [
                      {
                        name: filterName,
                        disabled: true,
                        typed_config: {
                          '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
                          // Envoy Gateway sets the authority (internal/xds/translator/extproc.go); the
                          // default, a cluster name with "/" in it, is refused by Node's HTTP/2 server.
                          grpc_service: {
                            envoy_grpc: {
                              cluster_name: extProcCluster,
                              authority: `${extProc.backendRefs[0].name}.${policy.metadata.namespace}:${extProc.backendRefs[0].port}`,
                            },
                            timeout: '10s',
                          },
                          failure_mode_allow: extProc.failOpen === true,
                          // No `request` block in the policy: request headers SKIP, body NONE.
                          processing_mode: {
                            request_header_mode: extProc.processingMode.request ? 'SEND' : 'SKIP',
                            response_header_mode: 'SEND',
                            response_body_mode: ({ Streamed: 'STREAMED', Buffered: 'BUFFERED', BufferedPartial: 'BUFFERED_PARTIAL' } as Record<string, string>)[
                              body
                            ],
                          },
                          response_attributes: extProc.processingMode.response.attributes,
                          ...(extProc.messageTimeout ? { message_timeout: seconds(extProc.messageTimeout) } : {}),
                          ...(extProc.shadowMode ? { observability_mode: true } : {}),
                        },
                      },
                      ...(limits.length > 0
                        ? [
                            {
                              name: RATE_LIMIT_FILTER,
                              typed_config: {
                                '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
                                stat_prefix: 'http_local_rate_limiter',
                                max_dynamic_descriptors: 10000,
                              },
                            },
                          ]
                        : []),
                      { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
                    ],
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters,
    },
  };
  return stringify(config, { lineWidth: 0 });
}
