// The sidecar on its own, for a gateway someone else runs: a StatefulSet (each pod's spool on a claim
// of its own), reached over the pod network with mTLS (the gateway's proxies present a client
// certificate), and a NetworkPolicy that lets only those proxies reach its ext_proc port.
import { labels } from './gateway.js';

export const EXT_PROC_PORT = 50051;
const VAULT_API_PORT = 50052;
/** The token exchange's HTTPS port (POST /oauth2/token, RFC 8693). */
export const EXCHANGE_PORT = 8444;
const OPS_PORT = 9464;
/** The sidecar's Okta token inline hook port (the hook itself is another change; its Service port is named `hook`). */
export const HOOK_PORT = 8081;
export const EXT_PROC_SERVICE = 'token-tap-extproc';
/** The sidecar's ext_proc server certificate (tls.crt, tls.key) and the CA of the gateway's client certificates (ca.crt). */
export const EXT_PROC_TLS_SECRET = 'token-tap-extproc-tls';
/** The TokenVault API's server certificate (tls.crt, tls.key). */
export const API_TLS_SECRET = 'token-tap-api-tls';
/** The token exchange's server certificate (tls.crt, tls.key). */
export const EXCHANGE_TLS_SECRET = 'token-tap-exchange-tls';
/** The token exchange's file (exchange.yaml: accepted Okta issuers, IdPs, matching), provided by the operator. */
export const EXCHANGE_CONFIGMAP = 'token-tap-exchange';
/** Headless Service governing the StatefulSet. */
const PODS_SERVICE = 'token-tap-pods';

/** The ext_proc Service's DNS name: what the sidecar's certificate names and the gateway checks. */
export function extProcHost(namespace: string): string {
  return `${EXT_PROC_SERVICE}.${namespace}.svc.cluster.local`;
}

const EXT_PROC_TLS_DIR = '/etc/token-tap/extproc-tls';
const API_TLS_DIR = '/etc/token-tap/api-tls';
const EXCHANGE_TLS_DIR = '/etc/token-tap/exchange-tls';
const EXCHANGE_CONFIG_DIR = '/etc/token-tap/exchange';

/**
 * The sidecar on its own: a StatefulSet (the spool on a claim per pod), Services (ext_proc; hook,
 * API, token exchange, metrics; the headless one governing the pods) and a NetworkPolicy.
 */
export function sidecarResources(options: {
  namespace: string;
  image: string;
  routeIdps?: string;
  proxies: { namespaceLabels: Record<string, string>; podLabels: Record<string, string> };
  /** The namespace whose pods labelled token-tap/client=true may call the TokenVault API (default: token-tap's own). */
  apiClientNamespace?: string;
  /** Render the token exchange (its Secret and ConfigMap must then exist). Off: nothing of it. */
  tokenExchange: boolean;
}) {
  const exchange = options.tokenExchange;
  const ifExchange = <T>(...items: T[]): T[] => (exchange ? items : []);
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
    // The token exchange answers upstream tokens too: TLS, as the API (add TOKEN_TAP_EXCHANGE_TLS_CLIENT_CA for mTLS).
    ...ifExchange(
      { name: 'TOKEN_TAP_EXCHANGE_LISTEN', value: `0.0.0.0:${EXCHANGE_PORT}` },
      { name: 'TOKEN_TAP_EXCHANGE_TLS_CERT', value: `${EXCHANGE_TLS_DIR}/tls.crt` },
      { name: 'TOKEN_TAP_EXCHANGE_TLS_KEY', value: `${EXCHANGE_TLS_DIR}/tls.key` },
      { name: 'TOKEN_TAP_EXCHANGE_CONFIG', value: `${EXCHANGE_CONFIG_DIR}/exchange.yaml` },
    ),
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
        // Scaling down or deleting keeps the claims: a spool may still hold captures (docs/deploy.md).
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
                  ...ifExchange({ name: 'exchange', containerPort: EXCHANGE_PORT }),
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
                  ...ifExchange(
                    { name: 'exchange-tls', mountPath: EXCHANGE_TLS_DIR, readOnly: true },
                    { name: 'exchange-config', mountPath: EXCHANGE_CONFIG_DIR, readOnly: true },
                  ),
                ],
              },
            ],
            volumes: [
              { name: 'extproc-tls', secret: { secretName: EXT_PROC_TLS_SECRET, defaultMode: 0o440 } },
              { name: 'api-tls', secret: { secretName: API_TLS_SECRET, defaultMode: 0o440 } },
              ...ifExchange<Record<string, unknown>>(
                { name: 'exchange-tls', secret: { secretName: EXCHANGE_TLS_SECRET, defaultMode: 0o440 } },
                { name: 'exchange-config', configMap: { name: EXCHANGE_CONFIGMAP } },
              ),
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
          ...ifExchange({ name: 'exchange', port: EXCHANGE_PORT, targetPort: 'exchange' }),
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
          // API and token exchange callers: labelled pods of one named namespace (kubernetes.io/metadata.name
          // is set by Kubernetes itself, so no namespace owner can claim it; change it to your callers').
          {
            from: [
              {
                namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': options.apiClientNamespace ?? options.namespace } },
                podSelector: { matchLabels: { 'token-tap/client': 'true' } },
              },
            ],
            ports: [{ port: VAULT_API_PORT, protocol: 'TCP' }, ...ifExchange({ port: EXCHANGE_PORT, protocol: 'TCP' })],
          },
          { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ port: OPS_PORT, protocol: 'TCP' }] },
        ],
      },
    },
  ];
}
