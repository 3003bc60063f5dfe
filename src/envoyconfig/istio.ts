// Istio: a ServiceEntry (and DestinationRule for TLS) per IdP, the VirtualService routing Okta's
// calls, the EnvoyFilter that adds ext_proc on the ingress gateway's IdP routes, and the mTLS
// DestinationRule to ext_proc; plus the sidecar itself (gateway-sidecar.ts).
import { IDP_METADATA_KEY, OKTA_HOOK_PATH, tokenRoutePath } from '../contract.js';
import { checkIdps, HOOK_RULE, HTTP_ROUTE_NAME, labels, ruleName, upstreamPort, type GatewayOptions } from './gateway.js';
import { EXT_PROC_PORT, EXT_PROC_SERVICE, extProcHost, HOOK_PORT, sidecarResources } from './gateway-sidecar.js';
import { hookRateLimitOf, istioHookRateLimit } from './okta-hook.js';
import type { IdpRoute } from './options.js';

/** Istio: the gateway's client certificate for ext_proc (tls.crt, tls.key, ca.crt), in the gateway's namespace. */
export const ISTIO_EXTPROC_CLIENT_SECRET = 'token-tap-extproc-client';

export interface IstioOptions extends Omit<GatewayOptions, 'gateway' | 'hostnames'> {
  /** The Istio Gateway (networking.istio.io) the VirtualService binds, as namespace/name. */
  gateway: { name: string; namespace: string };
  /** Hostnames Okta calls. */
  hostnames: string[];
  /** Labels of the ingress gateway pods (EnvoyFilter workloadSelector, NetworkPolicy). */
  ingressLabels: Record<string, string>;
  /** The Istio Gateway server's port Okta calls (Istio names the virtual hosts HOST:PORT); default 443. */
  gatewayPort?: number;
}

const EXT_PROC_FILTER = 'envoy.filters.http.ext_proc';

function istioRouteName(idp: string): string {
  return `idp-${ruleName(idp)}-token`;
}

export function renderIstioResources(options: IstioOptions): Array<Record<string, unknown>> {
  checkIdps(options.idps);
  const { namespace } = options;
  const observability = options.mode === 'observability';
  const host = (idp: IdpRoute) => idp.tokenUrl.hostname;
  const perIdp = options.idps.flatMap((idp) => [
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: `idp-${ruleName(idp.name)}`, namespace, labels },
      spec: {
        hosts: [host(idp)],
        location: 'MESH_EXTERNAL',
        resolution: 'DNS',
        ports: [
          {
            number: upstreamPort(idp.tokenUrl),
            name: idp.tokenUrl.protocol === 'https:' ? 'https' : 'http',
            protocol: idp.tokenUrl.protocol === 'https:' ? 'HTTPS' : 'HTTP',
          },
        ],
      },
    },
    ...(idp.tokenUrl.protocol === 'https:'
      ? [
          {
            apiVersion: 'networking.istio.io/v1',
            kind: 'DestinationRule',
            metadata: { name: `idp-${ruleName(idp.name)}`, namespace, labels },
            // The gateway originates TLS to the IdP (SNI set) and checks its certificate with the
            // proxy's system CAs (Istio's default for SIMPLE without caCertificates since 1.20).
            spec: { host: host(idp), trafficPolicy: { tls: { mode: 'SIMPLE', sni: host(idp) } } },
          },
        ]
      : []),
  ]);
  const virtualService = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: { name: HTTP_ROUTE_NAME, namespace, labels },
    spec: {
      hosts: options.hostnames,
      gateways: [`${options.gateway.namespace}/${options.gateway.name}`],
      http: [
        // Each route's name becomes the Envoy route name the EnvoyFilter below patches.
        ...options.idps.map((idp) => ({
          name: istioRouteName(idp.name),
          match: [{ uri: { exact: tokenRoutePath(idp.name) } }],
          rewrite: { uri: idp.tokenUrl.pathname, authority: host(idp) },
          route: [{ destination: { host: host(idp), port: { number: upstreamPort(idp.tokenUrl) } } }],
          timeout: '30s',
        })),
        {
          name: HOOK_RULE,
          match: [{ uri: { exact: OKTA_HOOK_PATH } }],
          route: [{ destination: { host: `token-tap.${namespace}.svc.cluster.local`, port: { number: HOOK_PORT } } }],
        },
      ],
    },
  };
  const extProcCluster = `outbound|${EXT_PROC_PORT}||${extProcHost(namespace)}`;
  // The gateway originates mTLS to ext_proc: its client certificate, key and the CA of the sidecar's
  // certificate from the Secret named by credentialName, which must be in the gateway's namespace.
  const extProcTls = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: EXT_PROC_SERVICE, namespace, labels },
    spec: {
      host: extProcHost(namespace),
      trafficPolicy: {
        tls: { mode: 'MUTUAL', credentialName: ISTIO_EXTPROC_CLIENT_SECRET, sni: extProcHost(namespace), subjectAltNames: [extProcHost(namespace)] },
      },
    },
  };
  const gatewayPort = options.gatewayPort ?? 443;
  const hookLimit = hookRateLimitOf(options);
  const envoyFilter = {
    apiVersion: 'networking.istio.io/v1alpha3',
    kind: 'EnvoyFilter',
    metadata: { name: 'token-tap', namespace: options.gateway.namespace, labels },
    spec: {
      workloadSelector: { labels: options.ingressLabels },
      configPatches: [
        {
          // The filter on the gateway's listeners, disabled: only the IdP routes enable it.
          applyTo: 'HTTP_FILTER',
          match: {
            context: 'GATEWAY',
            listener: { filterChain: { filter: { name: 'envoy.filters.network.http_connection_manager', subFilter: { name: 'envoy.filters.http.router' } } } },
          },
          patch: {
            operation: 'INSERT_BEFORE',
            value: {
              name: EXT_PROC_FILTER,
              disabled: true,
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
                grpc_service: { envoy_grpc: { cluster_name: extProcCluster }, timeout: '1s' },
                failure_mode_allow: true,
                processing_mode: {
                  request_header_mode: 'SKIP',
                  request_body_mode: 'NONE',
                  request_trailer_mode: 'SKIP',
                  response_header_mode: 'SEND',
                  response_body_mode: observability ? 'STREAMED' : 'BUFFERED',
                  response_trailer_mode: 'SKIP',
                },
                ...(observability
                  ? { observability_mode: true, deferred_close_timeout: '2s' }
                  : { message_timeout: `${(options.messageTimeoutMs ?? 200) / 1000}s` }),
                stat_prefix: 'token_tap',
              },
            },
          },
        },
        // Per route: enable it and name the IdP, as the bootstrap token-tap envoy-config renders does.
        // Matched by virtual host (HOST:PORT, Istio's name for it) and route name both: a tenant's
        // VirtualService on the same gateway with a route of the same name, on another host, gets
        // nothing (neither the filter nor our IdP metadata).
        ...options.idps.flatMap((idp) =>
          options.hostnames.map((hostname) => ({
            applyTo: 'HTTP_ROUTE',
            match: { context: 'GATEWAY', routeConfiguration: { vhost: { name: `${hostname}:${gatewayPort}`, route: { name: istioRouteName(idp.name) } } } },
            patch: {
              operation: 'MERGE',
              value: {
                typed_per_filter_config: {
                  [EXT_PROC_FILTER]: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
                    overrides: { grpc_initial_metadata: [{ key: IDP_METADATA_KEY, value: idp.name }] },
                  },
                },
              },
            },
          })),
        ),
        ...(hookLimit ? istioHookRateLimit({ hostnames: options.hostnames, gatewayPort, route: HOOK_RULE }, hookLimit) : []),
      ],
    },
  };
  return [
    ...perIdp,
    virtualService,
    envoyFilter,
    extProcTls,
    ...sidecarResources({
      namespace,
      image: options.image,
      proxies: { namespaceLabels: { 'kubernetes.io/metadata.name': options.gateway.namespace }, podLabels: options.ingressLabels },
      tokenExchange: options.tokenExchange ?? false,
    }),
  ];
}
