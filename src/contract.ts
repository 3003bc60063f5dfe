// The names Envoy's config and the sidecar must agree on, defined once. The renderer
// (envoyconfig/) writes them into Envoy's config; the ext_proc server, the config loader and the
// TokenVault API read or check them.

/**
 * An IdP name: the Envoy route and cluster name, the key of TOKEN_TAP_IDP_CONFIG, an API key's
 * scope and the `idp` of every stored grant. Lower-case so it is the same in a URL path, a
 * cluster name and a metrics label: 1-63 of [a-z0-9_-], starting and ending with a letter or digit.
 */
export const IDP_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$/;

export const IDP_NAME_RULE = 'lower-case letters, digits, "-" or "_", at most 63, starting and ending with a letter or digit';

export function isIdpName(name: string): boolean {
  return IDP_NAME_PATTERN.test(name);
}

/** gRPC metadata that the route's ExtProcPerRoute override sets to the IdP's name. */
export const IDP_METADATA_KEY = 'x-token-tap-idp';
/** `profile` on an IdP's userinfo/profile route; absent (token route) otherwise. */
export const ROUTE_METADATA_KEY = 'x-token-tap-route';
/** Profile routes: the dotted path of the user id in the profile JSON (e.g. `data.id`). */
export const SUBJECT_FIELD_METADATA_KEY = 'x-token-tap-subject-field';

/** The service name Envoy's grpc_health_check asks the ext_proc port about. */
export const EXT_PROC_HEALTH_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';

/** Where Envoy relays an IdP's token endpoint. */
export function tokenRoutePath(idpName: string): string {
  return `/idp/${idpName}/token`;
}

/** Where Envoy relays an IdP's profile (userinfo) endpoint. */
export function profileRoutePath(idpName: string): string {
  return `/idp/${idpName}/userinfo`;
}

/**
 * Envoy's readiness endpoint (on the listener `envoy-config --ready` renders): 200 only while Envoy
 * sees the sidecar healthy. What the pod's (or compose's) readiness probe asks.
 */
export const ENVOY_READY_PATH = '/ready';
/** Its port in everything we ship. */
export const ENVOY_READY_PORT = 9902;

/** Where Envoy takes Okta's token inline hook call, and where the sidecar's hook listener serves it. */
export const OKTA_HOOK_PATH = '/okta/token-hook';
/** Where the sidecar's token exchange listener (RFC 8693) serves `POST`, and where Envoy would route it. */
export const TOKEN_EXCHANGE_PATH = '/oauth2/token';
/** Route metadata (`filter_metadata`) namespace and key that may name the IdP of a route directly. */
export const ROUTE_METADATA_NAMESPACE = 'token-tap';
export const ROUTE_METADATA_IDP_KEY = 'idp';
/** The namespace Envoy Gateway writes each route's source resources under (key `resources`). */
export const ENVOY_GATEWAY_METADATA_NAMESPACE = 'envoy-gateway';

/**
 * How TOKEN_TAP_ROUTE_IDPS names an HTTPRoute rule: `httproute/<namespace>/<name>/<rule name>`,
 * from the route metadata Envoy Gateway writes (kind, namespace, name, sectionName).
 */
export function httpRouteRuleKey(namespace: string, name: string, sectionName: string): string {
  return `httproute/${namespace}/${name}/${sectionName}`;
}

/** The response attributes that can name a route, as Envoy's CEL names them (Envoy Gateway routes name no IdP in metadata). */
export const ROUTE_NAME_ATTRIBUTE = 'xds.route_name';
export const ROUTE_METADATA_ATTRIBUTE = 'xds.route_metadata';
