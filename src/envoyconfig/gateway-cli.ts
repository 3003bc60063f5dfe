// `token-tap envoy-gateway`: flags → the resources of envoy-gateway.ts (or istio.ts) as YAML. Kept
// out of cli/main.ts, which other commands share.
import { readFileSync } from 'node:fs';
import { EXT_PROC_CA_CONFIGMAP, renderGatewayResources } from './envoy-gateway.js';
import { parseIdpFlag } from './flags.js';
import { resourcesYaml } from './gateway.js';
import { API_TLS_SECRET, EXCHANGE_CONFIGMAP, EXCHANGE_PORT, EXCHANGE_TLS_SECRET, EXT_PROC_TLS_SECRET, extProcHost } from './gateway-sidecar.js';
import { ISTIO_EXTPROC_CLIENT_SECRET, renderIstioResources } from './istio.js';
import { hookLimitText, hookRateLimitOf } from './okta-hook.js';
import type { IdpRoute, ProcessingMode } from './options.js';
import { describeRateLimit, parseHookRateLimit, type RateLimit } from './rate-limit.js';
import { parseEach, parseOrNote } from '../config/values.js';

export interface GatewayFlags {
  idp: string[];
  mode: ProcessingMode;
  namespace: string;
  gateway: string;
  hostname: string[];
  image?: string;
  istio: boolean;
  /** --okta-hook-rate-limit: N/s[:BURST] per client address, or off (default 100/s:200). */
  oktaHookRateLimit?: string;
  /** --token-exchange: render the token exchange too (off by default). */
  tokenExchange?: boolean;
}

/** The image this build ships as (docker compose and deploy/kubernetes use the same tag). */
export function defaultImage(): string {
  const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `idp-token-tap:${version}`;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function renderGatewayCommand(flags: GatewayFlags, UsageError: new (message: string) => Error): string {
  const problems: string[] = [];
  const idps: IdpRoute[] = parseEach(flags.idp, parseIdpFlag, problems);
  if (flags.idp.length === 0) problems.push('at least one --idp NAME=URL is required');
  const [gatewayNamespace, gatewayName] = flags.gateway.includes('/') ? flags.gateway.split('/', 2) : [flags.namespace, flags.gateway];
  for (const [what, value] of [
    ['--namespace', flags.namespace],
    ['--gateway namespace', gatewayNamespace],
    ['--gateway name', gatewayName],
  ] as const) {
    if (!value || !DNS_LABEL.test(value)) problems.push(`${what} must be a Kubernetes name (lower-case letters, digits, "-"), got "${value ?? ''}"`);
  }
  if (flags.istio && flags.hostname.length === 0) problems.push('--istio needs at least one --hostname (the VirtualService hosts)');
  const oktaHookRateLimit: RateLimit | false | undefined =
    flags.oktaHookRateLimit === undefined ? undefined : parseOrNote(flags.oktaHookRateLimit, parseHookRateLimit, problems);
  if (problems.length > 0) throw new UsageError(problems.join('\n'));
  const common = {
    idps,
    mode: flags.mode,
    namespace: flags.namespace,
    gateway: { name: gatewayName!, namespace: gatewayNamespace! },
    hostnames: flags.hostname,
    image: flags.image ?? defaultImage(),
    tokenExchange: flags.tokenExchange ?? false,
    ...(oktaHookRateLimit !== undefined ? { oktaHookRateLimit } : {}),
  };
  const hookLimit = hookRateLimitOf(common);
  try {
    const resources = flags.istio ? renderIstioResources({ ...common, ingressLabels: { istio: 'ingressgateway' } }) : renderGatewayResources(common);
    const ns = flags.namespace;
    const host = extProcHost(ns);
    return resourcesYaml(resources, [
      `Rendered by token-tap envoy-gateway${flags.istio ? ' --istio' : ''}${flags.tokenExchange ? ' --token-exchange' : ''} --mode ${flags.mode} (${idps.map((idp) => idp.name).join(', ')}).`,
      `Okta's IdP token URL: https://<gateway host>/idp/<name>/token. Needs the Secret token-tap (DATABASE_URL, TOKEN_TAP_KEYS) in ${ns}.`,
      `Okta hook rule rate limit (per gateway replica): ${flags.istio || !hookLimit ? hookLimitText(hookLimit) : `${describeRateLimit({ requests: hookLimit.requests, perSeconds: hookLimit.perSeconds })}, per client address, 429 beyond (Envoy Gateway's bucket holds one unit's requests: no separate burst)`}.`,
      ...(hookLimit
        ? [
            flags.istio
              ? "The client address is the gateway's downstream address: behind a load balancer the balancer's (one bucket for all) unless gatewayTopology.numTrustedProxies says how many proxies append to X-Forwarded-For (meshConfig.defaultConfig, or the gateway pods' proxy.istio.io/config). Needs Istio 1.26+ (Envoy 1.34+)."
              : "The client address is the gateway's downstream address: behind a load balancer the balancer's (one bucket for all) unless a ClientTrafficPolicy on the Gateway sets clientIPDetection.xForwardedFor.numTrustedHops.",
          ]
        : []),
      '',
      'ext_proc is reached over the pod network, so it speaks mTLS (the sidecar refuses to start otherwise):',
      `  - Secret ${EXT_PROC_TLS_SECRET} in ${ns}: tls.crt/tls.key, the sidecar's certificate for ${host},`,
      "    and ca.crt, the CA of the gateway's client certificate (only clients it signed are served).",
      ...(flags.istio
        ? [
            `  - Secret ${ISTIO_EXTPROC_CLIENT_SECRET} in ${gatewayNamespace} (the gateway's namespace): tls.crt/tls.key, the`,
            "    gateway's client certificate, and ca.crt, the CA of the sidecar's certificate (the DestinationRule's credentialName).",
          ]
        : [
            `  - ConfigMap ${EXT_PROC_CA_CONFIGMAP} in ${ns}: ca.crt, the CA of the sidecar's certificate (the BackendTLSPolicy checks it).`,
            "  - The gateway's client certificate: in the EnvoyProxy of your GatewayClass or Gateway (parametersRef), set",
            '    spec.backendTLS.clientCertificateRef: {kind: Secret, name: <tls Secret>, namespace: <its namespace>}',
            '    (a kubernetes.io/tls Secret signed by the ca.crt above; a ReferenceGrant when it is in another namespace).',
          ]),
      `  - Secret ${API_TLS_SECRET} in ${ns}: tls.crt/tls.key for the TokenVault API (it is refused beyond loopback without TLS).`,
      ...(flags.tokenExchange
        ? [
            `  - Secret ${EXCHANGE_TLS_SECRET} in ${ns}: tls.crt/tls.key for the token exchange (https://token-tap.${ns}.svc:${EXCHANGE_PORT}/oauth2/token),`,
            `    and ConfigMap ${EXCHANGE_CONFIGMAP} in ${ns}: exchange.yaml, its accepted Okta issuers and IdPs (docs/token-exchange.md).`,
          ]
        : ['The token exchange is off (--token-exchange renders it; it then needs its Secret and ConfigMap).']),
      'Only where a NetworkPolicy alone must guard ext_proc: drop the TOKEN_TAP_EXTPROC_TLS_* variables and set',
      'TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true (the sidecar warns at every start; anyone past the policy writes grants).',
    ]);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}
