// Envoy Gateway: the HTTPRoute with a rule per IdP (rewritten to its token URL), the
// EnvoyExtensionPolicy that puts ext_proc on those rules, and the BackendTLSPolicy with which the
// gateway checks the sidecar's certificate; plus the sidecar itself (gateway-sidecar.ts).
import { httpRouteRuleKey, OKTA_HOOK_PATH, ROUTE_METADATA_ATTRIBUTE, ROUTE_NAME_ATTRIBUTE, tokenRoutePath } from '../contract.js';
import { checkIdps, HOOK_RULE, HTTP_ROUTE_NAME, labels, ruleName, upstreamPort, type GatewayOptions } from './gateway.js';
import { EXT_PROC_PORT, EXT_PROC_SERVICE, extProcHost, HOOK_PORT, sidecarResources } from './gateway-sidecar.js';
import { hookRateLimitOf, hookRateLimitPolicy } from './okta-hook.js';
import type { IdpRoute } from './options.js';

/** Envoy Gateway: the CA (ca.crt) the gateway checks the sidecar's ext_proc certificate against (BackendTLSPolicy). */
export const EXT_PROC_CA_CONFIGMAP = 'token-tap-extproc-ca';
/** The response attributes that name the route to the sidecar (the policy cannot set per-route initial metadata). */
const ROUTE_ATTRIBUTES = [ROUTE_NAME_ATTRIBUTE, ROUTE_METADATA_ATTRIBUTE];

/** TOKEN_TAP_ROUTE_IDPS for these rules: the sidecar's map from HTTPRoute rule to IdP. */
function gatewayRouteIdps(namespace: string, idps: IdpRoute[]): string {
  return idps.map((idp) => `${httpRouteRuleKey(namespace, HTTP_ROUTE_NAME, ruleName(idp.name))}=${idp.name}`).join(',');
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
          filters: [
            { type: 'URLRewrite', urlRewrite: { hostname: idp.tokenUrl.hostname, path: { type: 'ReplaceFullPath', replaceFullPath: idp.tokenUrl.pathname } } },
          ],
          backendRefs: [{ group: 'gateway.envoyproxy.io', kind: 'Backend', name: `idp-${ruleName(idp.name)}`, port: upstreamPort(idp.tokenUrl) }],
          timeouts: { request: '30s' },
        })),
        // Okta's token inline hook, served by the sidecar; no ext_proc on it (the policy does not target it).
        {
          name: HOOK_RULE,
          matches: [{ path: { type: 'Exact', value: OKTA_HOOK_PATH } }],
          backendRefs: [{ kind: 'Service', name: 'token-tap', port: HOOK_PORT }],
        },
      ],
    },
  };
  const observability = options.mode === 'observability';
  const policy = {
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'EnvoyExtensionPolicy',
    metadata: { name: 'token-tap', namespace, labels },
    spec: {
      targetRefs: options.idps.map((idp) => ({
        group: 'gateway.networking.k8s.io',
        kind: 'HTTPRoute',
        name: HTTP_ROUTE_NAME,
        sectionName: ruleName(idp.name),
      })),
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
    ...sidecarResources({
      namespace,
      image: options.image,
      routeIdps: gatewayRouteIdps(namespace, options.idps),
      proxies: ENVOY_GATEWAY_PROXIES,
      tokenExchange: options.tokenExchange ?? false,
    }),
  ];
}
