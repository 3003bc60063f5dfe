// Renders the Kubernetes resources that put token-tap behind a gateway someone else runs: Envoy
// Gateway (Gateway API + EnvoyExtensionPolicy) or an Istio ingress gateway (EnvoyFilter). Pure:
// options in, plain objects (and their YAML) out. There the gateway's Envoy is not our pod, so the
// sidecar runs as a StatefulSet of its own (each pod's spool on a claim of its own), reached over the
// pod network with mTLS (the gateway's proxies present a client certificate), and a NetworkPolicy
// lets only those proxies reach its ext_proc port.
import { stringify } from 'yaml';
import { escapeControlCharacters } from '../config/values.js';
import { httpRouteRuleKey, IDP_METADATA_KEY, tokenRoutePath, OKTA_HOOK_PATH, ROUTE_METADATA_ATTRIBUTE, ROUTE_NAME_ATTRIBUTE } from '../contract.js';
import type { IdpRoute, ProcessingMode } from './options.js';
import { hookRateLimitOf, hookRateLimitPolicy, istioHookRateLimit } from './okta-hook.js';
import type { RateLimit } from './rate-limit.js';

const EXT_PROC_PORT = 50051;
const VAULT_API_PORT = 50052;
const OPS_PORT = 9464;
/** The sidecar's Okta token inline hook port (the hook itself is another change; its Service port is named `hook`). */
const HOOK_PORT = 8081;
const HTTP_ROUTE_NAME = 'token-tap-idps';
/** The hook's HTTPRoute rule (Envoy Gateway) and VirtualService route (Istio). */
const HOOK_RULE = 'okta-token-hook';
const EXT_PROC_SERVICE = 'token-tap-extproc';
/** The sidecar's ext_proc server certificate (tls.crt, tls.key) and the CA of the gateway's client certificates (ca.crt). */
export const EXT_PROC_TLS_SECRET = 'token-tap-extproc-tls';
/** Envoy Gateway: the CA (ca.crt) the gateway checks the sidecar's ext_proc certificate against (BackendTLSPolicy). */
export const EXT_PROC_CA_CONFIGMAP = 'token-tap-extproc-ca';
/** Istio: the gateway's client certificate for ext_proc (tls.crt, tls.key, ca.crt), in the gateway's namespace. */
export const ISTIO_EXTPROC_CLIENT_SECRET = 'token-tap-extproc-client';
/** The TokenVault API's server certificate (tls.crt, tls.key). */
export const API_TLS_SECRET = 'token-tap-api-tls';
/** Headless Service governing the StatefulSet. */
const PODS_SERVICE = 'token-tap-pods';
/** The response attributes that name the route to the sidecar (the policy cannot set per-route initial metadata). */
const ROUTE_ATTRIBUTES = [ROUTE_NAME_ATTRIBUTE, ROUTE_METADATA_ATTRIBUTE];

export interface GatewayOptions {
  idps: IdpRoute[];
  mode: ProcessingMode;
  /** Namespace of token-tap, the HTTPRoute and the policy. */
  namespace: string;
  /** The Gateway (Envoy Gateway) the HTTPRoute attaches to. */
  gateway: { name: string; namespace: string };
  /** Hostnames Okta calls (HTTPRoute hostnames); empty: the Gateway's. */
  hostnames: string[];
  /** The sidecar image, e.g. idp-token-tap:0.1.0. */
  image: string;
  /** Buffered mode: how long Envoy waits for each reply before failing open (default 200). */
  messageTimeoutMs?: number;
  /** A rate limit on the hook rule (429 beyond it); default DEFAULT_OKTA_HOOK_RATE_LIMIT, false: none. */
  oktaHookRateLimit?: RateLimit | false;
}

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

/** Kubernetes names are DNS labels: an IdP name's "_" becomes "-". */
function ruleName(idp: string): string {
  return idp.replaceAll('_', '-');
}

function checkIdps(idps: IdpRoute[]): void {
  if (idps.length === 0) throw new Error('at least one --idp NAME=URL is required');
  const rules = new Map<string, string>();
  for (const idp of idps) {
    const rule = ruleName(idp.name);
    if (rules.has(rule)) throw new Error(`IdPs "${rules.get(rule)}" and "${idp.name}" give the same Kubernetes name "${rule}"`);
    rules.set(rule, idp.name);
    // URLRewrite replaces the path only; a query in the token URL would be lost.
    if (idp.tokenUrl.search) throw new Error(`IdP "${idp.name}": a token URL with a query (${idp.tokenUrl.search}) cannot be rewritten by an HTTPRoute`);
  }
}

function upstreamPort(url: URL): number {
  return url.port ? Number.parseInt(url.port, 10) : url.protocol === 'https:' ? 443 : 80;
}

const labels = { 'app.kubernetes.io/name': 'idp-token-tap', 'app.kubernetes.io/component': 'token-tap-extproc' };

/** TOKEN_TAP_ROUTE_IDPS for these rules: the sidecar's map from HTTPRoute rule to IdP. */
function gatewayRouteIdps(namespace: string, idps: IdpRoute[]): string {
  return idps.map((idp) => `${httpRouteRuleKey(namespace, HTTP_ROUTE_NAME, ruleName(idp.name))}=${idp.name}`).join(',');
}

/** The ext_proc Service's DNS name: what the sidecar's certificate names and the gateway checks. */
export function extProcHost(namespace: string): string {
  return `${EXT_PROC_SERVICE}.${namespace}.svc.cluster.local`;
}

const EXT_PROC_TLS_DIR = '/etc/token-tap/extproc-tls';
const API_TLS_DIR = '/etc/token-tap/api-tls';

/**
 * The sidecar on its own: a StatefulSet (the spool on a claim per pod), Services (ext_proc; hook,
 * API, metrics; the headless one governing the pods) and a NetworkPolicy.
 */
function sidecarResources(options: {
  namespace: string;
  image: string;
  routeIdps?: string;
  proxies: { namespaceLabels: Record<string, string>; podLabels: Record<string, string> };
  /** The namespace whose pods labelled token-tap/client=true may call the TokenVault API (default: token-tap's own). */
  apiClientNamespace?: string;
}) {
  const env = [
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'DATABASE_URL', valueFrom: { secretKeyRef: { name: 'token-tap', key: 'DATABASE_URL' } } },
    { name: 'TOKEN_TAP_KEYS', valueFrom: { secretKeyRef: { name: 'token-tap', key: 'TOKEN_TAP_KEYS' } } },
    { name: 'TOKEN_TAP_SPOOL_DIR', value: '/var/spool/token-tap' },
    { name: 'TOKEN_TAP_OPS_LISTEN', value: `0.0.0.0:${OPS_PORT}` },
    // ext_proc is remote here, so it speaks mTLS: only a client certificate from ca.crt (the gateway's) is served.
    { name: 'TOKEN_TAP_EXTPROC_TLS_CERT', value: `${EXT_PROC_TLS_DIR}/tls.crt` },
    { name: 'TOKEN_TAP_EXTPROC_TLS_KEY', value: `${EXT_PROC_TLS_DIR}/tls.key` },
    { name: 'TOKEN_TAP_EXTPROC_TLS_CLIENT_CA', value: `${EXT_PROC_TLS_DIR}/ca.crt` },
    // The TokenVault API answers with tokens: TLS (add TOKEN_TAP_API_TLS_CLIENT_CA for mTLS).
    { name: 'TOKEN_TAP_API_LISTEN', value: `0.0.0.0:${VAULT_API_PORT}` },
    { name: 'TOKEN_TAP_API_TLS_CERT', value: `${API_TLS_DIR}/tls.crt` },
    { name: 'TOKEN_TAP_API_TLS_KEY', value: `${API_TLS_DIR}/tls.key` },
    ...(options.routeIdps ? [{ name: 'TOKEN_TAP_ROUTE_IDPS', value: options.routeIdps }] : []),
  ];
  const meta = (name: string) => ({ name, namespace: options.namespace, labels });
  return [
    {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: meta('token-tap'),
      spec: {
        replicas: 2,
        serviceName: PODS_SERVICE,
        // Pods start and stop side by side (they share nothing but Postgres); rollouts still go one by one.
        podManagementPolicy: 'Parallel',
        selector: { matchLabels: labels },
        updateStrategy: { type: 'RollingUpdate' },
        // Scaling down or deleting keeps the claims: a spool may still hold captures (README "Deploy").
        persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
        template: {
          metadata: { labels },
          spec: {
            automountServiceAccountToken: false,
            terminationGracePeriodSeconds: 30,
            // fsGroup: the claim and the Secrets are readable by the sidecar's group.
            securityContext: { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: 'token-tap',
                image: options.image,
                // ext_proc on the pod's own address, never a wildcard: the gateway's proxies are in
                // other pods and reach it through the Service, so it is remote by design (the flag
                // says so, and the sidecar warns at start). It is refused without mTLS
                // (TOKEN_TAP_EXTPROC_TLS_CLIENT_CA above); the NetworkPolicy admits only the proxies.
                args: ['serve', '--listen', `$(POD_IP):${EXT_PROC_PORT}`, '--allow-remote-extproc'],
                env,
                ports: [
                  { name: 'extproc', containerPort: EXT_PROC_PORT },
                  { name: 'hook', containerPort: HOOK_PORT },
                  { name: 'vault-api', containerPort: VAULT_API_PORT },
                  { name: 'ops', containerPort: OPS_PORT },
                ],
                // The gateway's Envoy learns the sidecar pods from the Service's endpoints, ready pods
                // only, and does no health check of its own: /readyz (200 once ext_proc is served) is
                // the moment it starts sending streams, so none reaches a sidecar not serving yet.
                readinessProbe: { httpGet: { path: '/readyz', port: 'ops' }, periodSeconds: 5 },
                livenessProbe: { httpGet: { path: '/healthz', port: 'ops' }, periodSeconds: 10, failureThreshold: 6 },
                resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                volumeMounts: [
                  { name: 'spool', mountPath: '/var/spool/token-tap' },
                  { name: 'extproc-tls', mountPath: EXT_PROC_TLS_DIR, readOnly: true },
                  { name: 'api-tls', mountPath: API_TLS_DIR, readOnly: true },
                ],
              },
            ],
            volumes: [
              { name: 'extproc-tls', secret: { secretName: EXT_PROC_TLS_SECRET, defaultMode: 0o440 } },
              { name: 'api-tls', secret: { secretName: API_TLS_SECRET, defaultMode: 0o440 } },
            ],
          },
        },
        // Each pod's spool holds captures Postgres has not taken yet: a claim of its own outlives the
        // pod (rollouts, evictions, node drains), and the pod with the same ordinal replays it.
        // ReadWriteOncePod (Kubernetes 1.29+): one pod at a time, never two pods on one node.
        volumeClaimTemplates: [{ metadata: { name: 'spool' }, spec: { accessModes: ['ReadWriteOncePod'], resources: { requests: { storage: '1Gi' } } } }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(PODS_SERVICE),
      spec: { clusterIP: 'None', selector: labels, ports: [{ name: 'ops', port: OPS_PORT, targetPort: 'ops' }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(EXT_PROC_SERVICE),
      // gRPC over TLS (the port name tells Istio; Envoy Gateway speaks HTTP/2 to ext_proc).
      spec: { selector: labels, ports: [{ name: 'grpc-extproc', port: EXT_PROC_PORT, targetPort: 'extproc' }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta('token-tap'),
      spec: {
        selector: labels,
        ports: [
          { name: 'hook', port: HOOK_PORT, targetPort: 'hook' },
          { name: 'vault-api', port: VAULT_API_PORT, targetPort: 'vault-api' },
          { name: 'ops', port: OPS_PORT, targetPort: 'ops' },
        ],
      },
    },
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta('token-tap'),
      spec: {
        podSelector: { matchLabels: labels },
        policyTypes: ['Ingress'],
        ingress: [
          // Only the gateway's proxies write grants (ext_proc) and call the Okta hook.
          {
            from: [{ namespaceSelector: { matchLabels: options.proxies.namespaceLabels }, podSelector: { matchLabels: options.proxies.podLabels } }],
            ports: [
              { port: EXT_PROC_PORT, protocol: 'TCP' },
              { port: HOOK_PORT, protocol: 'TCP' },
            ],
          },
          // API callers: labelled pods of one named namespace (kubernetes.io/metadata.name is set by
          // Kubernetes itself, so no namespace owner can claim it; change it to your callers').
          {
            from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': options.apiClientNamespace ?? options.namespace } }, podSelector: { matchLabels: { 'token-tap/client': 'true' } } }],
            ports: [{ port: VAULT_API_PORT, protocol: 'TCP' }],
          },
          { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ port: OPS_PORT, protocol: 'TCP' }] },
        ],
      },
    },
  ];
}

/** Envoy Gateway runs its proxies in its own namespace, labelled as below (the default install). */
const ENVOY_GATEWAY_PROXIES = {
  namespaceLabels: { 'kubernetes.io/metadata.name': 'envoy-gateway-system' },
  podLabels: { 'app.kubernetes.io/managed-by': 'envoy-gateway', 'app.kubernetes.io/component': 'proxy' },
};

export function renderGatewayResources(options: GatewayOptions): Array<Record<string, unknown>> {
  checkIdps(options.idps);
  const { namespace } = options;
  const backends = options.idps.map((idp) => ({
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'Backend',
    metadata: { name: `idp-${ruleName(idp.name)}`, namespace, labels },
    spec: {
      endpoints: [{ fqdn: { hostname: idp.tokenUrl.hostname, port: upstreamPort(idp.tokenUrl) } }],
      ...(idp.tokenUrl.protocol === 'https:' ? { tls: { sni: idp.tokenUrl.hostname, wellKnownCACertificates: 'System' } } : {}),
    },
  }));
  const route = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: HTTP_ROUTE_NAME, namespace, labels },
    spec: {
      parentRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: options.gateway.name, namespace: options.gateway.namespace }],
      ...(options.hostnames.length > 0 ? { hostnames: options.hostnames } : {}),
      rules: [
        // One named rule per IdP: the policy targets it by sectionName, and the sidecar maps the
        // rule (from the route metadata Envoy Gateway writes) to the IdP.
        ...options.idps.map((idp) => ({
          name: ruleName(idp.name),
          matches: [{ path: { type: 'Exact', value: tokenRoutePath(idp.name) } }],
          filters: [{ type: 'URLRewrite', urlRewrite: { hostname: idp.tokenUrl.hostname, path: { type: 'ReplaceFullPath', replaceFullPath: idp.tokenUrl.pathname } } }],
          backendRefs: [{ group: 'gateway.envoyproxy.io', kind: 'Backend', name: `idp-${ruleName(idp.name)}`, port: upstreamPort(idp.tokenUrl) }],
          timeouts: { request: '30s' },
        })),
        // Okta's token inline hook, served by the sidecar; no ext_proc on it (the policy does not target it).
        { name: HOOK_RULE, matches: [{ path: { type: 'Exact', value: OKTA_HOOK_PATH } }], backendRefs: [{ kind: 'Service', name: 'token-tap', port: HOOK_PORT }] },
      ],
    },
  };
  const observability = options.mode === 'observability';
  const policy = {
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'EnvoyExtensionPolicy',
    metadata: { name: 'token-tap', namespace, labels },
    spec: {
      targetRefs: options.idps.map((idp) => ({ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: HTTP_ROUTE_NAME, sectionName: ruleName(idp.name) })),
      extProc: [
        {
          backendRefs: [{ kind: 'Service', name: EXT_PROC_SERVICE, port: EXT_PROC_PORT }],
          // Fail open: a sidecar that is down, slow or broken never breaks a login.
          failOpen: true,
          messageTimeout: `${options.messageTimeoutMs ?? 200}ms`,
          // No `request` block: request headers SKIP, request body NONE (Okta's client secret is
          // never sent). The response headers carry the route attributes.
          processingMode: { response: { body: observability ? 'Streamed' : 'Buffered', attributes: ROUTE_ATTRIBUTES } },
          // shadowMode (Envoy's observability_mode, Envoy Gateway v1.9+): Envoy never waits on the sidecar.
          ...(observability ? { shadowMode: true } : {}),
        },
      ],
    },
  };
  // The gateway dials ext_proc over TLS and checks the sidecar's certificate (for the Service's DNS
  // name) against the CA in the ConfigMap; its own client certificate comes from the EnvoyProxy
  // (spec.backendTLS.clientCertificateRef), see the header of the rendered file.
  const backendTls = {
    apiVersion: 'gateway.networking.k8s.io/v1alpha3',
    kind: 'BackendTLSPolicy',
    metadata: { name: EXT_PROC_SERVICE, namespace, labels },
    spec: {
      targetRefs: [{ group: '', kind: 'Service', name: EXT_PROC_SERVICE, sectionName: 'grpc-extproc' }],
      validation: { caCertificateRefs: [{ group: '', kind: 'ConfigMap', name: EXT_PROC_CA_CONFIGMAP }], hostname: extProcHost(namespace) },
    },
  };
  const hookLimit = hookRateLimitOf(options);
  return [
    ...backends,
    route,
    policy,
    ...(hookLimit ? [hookRateLimitPolicy({ namespace, labels, route: HTTP_ROUTE_NAME, rule: HOOK_RULE }, hookLimit)] : []),
    backendTls,
    ...sidecarResources({ namespace, image: options.image, routeIdps: gatewayRouteIdps(namespace, options.idps), proxies: ENVOY_GATEWAY_PROXIES }),
  ];
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
      spec: { hosts: [host(idp)], location: 'MESH_EXTERNAL', resolution: 'DNS', ports: [{ number: upstreamPort(idp.tokenUrl), name: idp.tokenUrl.protocol === 'https:' ? 'https' : 'http', protocol: idp.tokenUrl.protocol === 'https:' ? 'HTTPS' : 'HTTP' }] },
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
        { name: HOOK_RULE, match: [{ uri: { exact: OKTA_HOOK_PATH } }], route: [{ destination: { host: `token-tap.${namespace}.svc.cluster.local`, port: { number: HOOK_PORT } } }] },
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
      trafficPolicy: { tls: { mode: 'MUTUAL', credentialName: ISTIO_EXTPROC_CLIENT_SECRET, sni: extProcHost(namespace), subjectAltNames: [extProcHost(namespace)] } },
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
          match: { context: 'GATEWAY', listener: { filterChain: { filter: { name: 'envoy.filters.network.http_connection_manager', subFilter: { name: 'envoy.filters.http.router' } } } } },
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
                ...(observability ? { observability_mode: true, deferred_close_timeout: '2s' } : { message_timeout: `${(options.messageTimeoutMs ?? 200) / 1000}s` }),
                stat_prefix: 'token_tap',
              },
            },
          },
        },
        // Per route: enable it and name the IdP, as the bootstrap token-tap envoy-config renders does.
        // Matched by virtual host (HOST:PORT, Istio's name for it) and route name both: a tenant's
        // VirtualService on the same gateway with a route of the same name, on another host, gets
        // nothing (neither the filter nor our IdP metadata).
        ...options.idps.flatMap((idp) => options.hostnames.map((hostname) => ({
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
        }))),
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
    }),
  ];
}

export function resourcesYaml(resources: Array<Record<string, unknown>>, header: string[]): string {
  return `${header.map((line) => `# ${escapeControlCharacters(line)}`.trimEnd()).join('\n')}\n${resources.map((resource) => stringify(resource, { lineWidth: 0 })).join('---\n')}`;
}
