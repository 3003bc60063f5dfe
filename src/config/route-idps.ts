// TOKEN_TAP_ROUTE_IDPS: which Envoy route belongs to which IdP, for control planes that cannot set
// per-route gRPC initial metadata (Envoy Gateway). Explicit: a route is matched by its rule
// (`httproute/<namespace>/<name>/<rule>`, from the route metadata Envoy Gateway writes) or by its
// exact xDS route name, and every IdP name is checked against the one pattern in contract.ts.
import { filterMetadataFromText } from '../capture/route-metadata.js';
import type { ObservedResponse } from '../capture/types.js';
import { ENVOY_GATEWAY_METADATA_NAMESPACE, httpRouteRuleKey, IDP_NAME_RULE, isIdpName, ROUTE_METADATA_IDP_KEY, ROUTE_METADATA_NAMESPACE } from '../contract.js';

/** Route key (rule key or xDS route name) → IdP name. */
export type RouteIdps = ReadonlyMap<string, string>;

/** Where a stream's IdP came from, in the order they are tried (docs/deploy.md, "Which route is which IdP"). */
export type IdpSource = 'grpc_metadata' | 'route_metadata_idp' | 'route_rule' | 'route_name';

export interface ResolvedRoute {
  idp: string | undefined;
  source: IdpSource | undefined;
  /** What the route was looked up by, for the log line of an unmatched route (never a token). */
  keys: string[];
}

/**
 * Parses `KEY=IDP` entries separated by commas or whitespace. Problems join `problems`, each
 * naming the entry, so every one is reported at once.
 */
export function parseRouteIdps(text: string | undefined, problems: string[], what = 'TOKEN_TAP_ROUTE_IDPS'): RouteIdps {
  const map = new Map<string, string>();
  for (const entry of (text ?? '').split(/[\s,]+/).filter(Boolean)) {
    const separator = entry.lastIndexOf('=');
    const key = entry.slice(0, Math.max(separator, 0));
    const idp = entry.slice(separator + 1);
    if (separator <= 0) {
      problems.push(`${what}: "${entry}" must be ROUTE=IDP (ROUTE: httproute/<namespace>/<name>/<rule name> or an xDS route name)`);
    } else if (!isIdpName(idp)) {
      problems.push(`${what}: IdP name "${idp}" of route "${key}" must be ${IDP_NAME_RULE}`);
    } else if (map.has(key) && map.get(key) !== idp) {
      problems.push(`${what}: route "${key}" is given twice, for "${map.get(key)}" and "${idp}"`);
    } else {
      map.set(key, idp);
    }
  }
  return map;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The rule keys of the HTTPRoute rules Envoy Gateway built this route from. */
export function httpRouteRuleKeys(filterMetadata: Record<string, Record<string, unknown>>): string[] {
  const resources = filterMetadata[ENVOY_GATEWAY_METADATA_NAMESPACE]?.resources;
  if (!Array.isArray(resources)) return [];
  return resources.flatMap((resource: unknown) => {
    const { kind, namespace, name, sectionName } = (resource ?? {}) as Record<string, unknown>;
    if (kind !== 'HTTPRoute' || !text(namespace) || !text(name) || !text(sectionName)) return [];
    return [httpRouteRuleKey(namespace as string, name as string, sectionName as string)];
  });
}

/**
 * The IdP of one response. One rule, first match wins:
 * 1. gRPC initial metadata `x-token-tap-idp` (our rendered config, Istio's per-route patch);
 * 2. route metadata `filter_metadata["token-tap"].idp` naming the IdP itself;
 * 3. TOKEN_TAP_ROUTE_IDPS by the route's HTTPRoute rule (Envoy Gateway's route metadata);
 * 4. TOKEN_TAP_ROUTE_IDPS by the exact xDS route name.
 * A name from metadata that fails the IdP name pattern names nothing.
 */
export function resolveRoute(observed: Pick<ObservedResponse, 'idp' | 'routeName' | 'routeMetadata'>, routeIdps: RouteIdps): ResolvedRoute {
  if (observed.idp !== undefined && isIdpName(observed.idp)) return { idp: observed.idp, source: 'grpc_metadata', keys: [] };
  const keys: string[] = [];
  const metadata = observed.routeMetadata === undefined ? undefined : filterMetadataFromText(observed.routeMetadata);
  if (metadata) {
    const named = text(metadata[ROUTE_METADATA_NAMESPACE]?.[ROUTE_METADATA_IDP_KEY]);
    if (named !== undefined && isIdpName(named)) return { idp: named, source: 'route_metadata_idp', keys: [] };
    for (const key of httpRouteRuleKeys(metadata)) {
      keys.push(key);
      const idp = routeIdps.get(key);
      if (idp !== undefined) return { idp, source: 'route_rule', keys };
    }
  }
  if (observed.routeName !== undefined) {
    keys.push(observed.routeName);
    const idp = routeIdps.get(observed.routeName);
    if (idp !== undefined) return { idp, source: 'route_name', keys };
  }
  return { idp: undefined, source: undefined, keys };
}
