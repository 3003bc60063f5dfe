// Renders the Kubernetes resources that put token-tap behind a gateway someone else runs: Envoy
// Gateway (Gateway API + EnvoyExtensionPolicy: envoy-gateway.ts) or an Istio ingress gateway
// (EnvoyFilter: istio.ts). Pure: options in, plain objects (and their YAML) out. There the gateway's
// Envoy is not our pod, so the sidecar runs on its own (gateway-sidecar.ts). This file holds what
// both gateways share: their options, the names of the route and its rules, the IdP checks, YAML.
import { stringify } from 'yaml';
import { escapeControlCharacters } from '../config/values.js';
import type { IdpRoute, ProcessingMode } from './options.js';
import type { RateLimit } from './rate-limit.js';

export const HTTP_ROUTE_NAME = 'token-tap-idps';
/** The hook's HTTPRoute rule (Envoy Gateway) and VirtualService route (Istio). */
export const HOOK_RULE = 'okta-token-hook';

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
  /** The token exchange in the sidecar (--token-exchange): its env, mounts, port and NetworkPolicy rule. Off by default: it needs a Secret and a ConfigMap the operator provides, and the sidecar does not start without them. */
  tokenExchange?: boolean;
}

/** Kubernetes names are DNS labels: an IdP name's "_" becomes "-". */
export function ruleName(idp: string): string {
  return idp.replaceAll('_', '-');
}

/** Both gateways name resources after each IdP and rewrite only the token URL's path. */
export function checkIdps(idps: IdpRoute[]): void {
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

export function upstreamPort(url: URL): number {
  return url.port ? Number.parseInt(url.port, 10) : url.protocol === 'https:' ? 443 : 80;
}

/** On every rendered resource, and the sidecar pods' selector. */
export const labels = { 'app.kubernetes.io/name': 'idp-token-tap', 'app.kubernetes.io/component': 'token-tap-extproc' };

export function resourcesYaml(resources: Array<Record<string, unknown>>, header: string[]): string {
  return `${header.map((line) => `# ${escapeControlCharacters(line)}`.trimEnd()).join('\n')}\n${resources.map((resource) => stringify(resource, { lineWidth: 0 })).join('---\n')}`;
}
