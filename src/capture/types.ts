// The shapes that flow through capture: what Envoy showed us, and what we make of it.

/**
 * What an Envoy route carries to the sidecar: a token route (the IdP's token endpoint), or a
 * profile route (the IdP's userinfo/profile endpoint, which names the user of a token).
 */
export type RouteKind = 'token' | 'profile';

/** An upstream response as observed through ext_proc. Built by extproc/Exchange. */
export interface ObservedResponse {
  /** The IdP name from the route's ext_proc metadata; undefined when the route names none. */
  idp: string | undefined;
  /** Envoy's `xds.route_name` response attribute, when the filter is configured to send it. */
  routeName?: string;
  /** Envoy's `xds.route_metadata` response attribute: the route's Metadata in protobuf text format. */
  routeMetadata?: string;
  routeKind: RouteKind;
  /** Profile routes: where the user id sits in the profile (dotted path); undefined for the defaults. */
  subjectField: string | undefined;
  /** Profile routes: the bearer token of the request (the access token being used). Memory only. */
  bearerToken: string | undefined;
  status: number | undefined;
  /** Lower-cased header names; pseudo-headers (`:status`) excluded. */
  headers: ReadonlyMap<string, string>;
  body: Buffer;
  /** The body exceeded the collection limit; `body` holds only a prefix. */
  bodyTruncated: boolean;
  /** Envoy signalled the end of the response (end_of_stream or trailers). */
  complete: boolean;
  /** Epoch milliseconds when the response headers arrived. */
  startedAt: number;
}

/**
 * `too_large`: the body, or a field of it, is over its bound (bounds.ts); `incomplete`: Envoy did not
 * signal the end of the response, so nothing of it is read. Neither keeps tokens or changes a grant.
 */
export type CaptureOutcome = 'stored' | 'idp_error' | 'unparseable' | 'too_large' | 'incomplete' | 'no_subject' | 'profile' | 'unverified';

/** What a profile response says about the user of an access token. */
export interface ProfileLink {
  /** The access token the profile was fetched with; the store matches it by fingerprint. */
  accessToken: string;
  subject: string;
  email: string | undefined;
}

/** The tokens and metadata of one successful token response. */
export interface TokenSet {
  accessToken: string | undefined;
  refreshToken: string | undefined;
  idToken: string | undefined;
  tokenType: string | undefined;
  /** Seconds, as the IdP sent them (number or numeric string), undefined when absent. */
  expiresIn: number | undefined;
  refreshExpiresIn: number | undefined;
  scope: string[];
  /** Every other field of the response, kept as sent. */
  extras: Record<string, unknown>;
  /** Decoded (not verified) id_token claims; undefined without an id_token. */
  claims: Record<string, unknown> | undefined;
}

/** One capture, ready for the vault. Holds plaintext tokens only in memory. */
export interface Capture {
  captureId: string;
  idp: string;
  observedAt: Date;
  httpStatus: number | undefined;
  outcome: CaptureOutcome;
  subject: string | undefined;
  issuer: string | undefined;
  /** The OAuth client the tokens were issued to (id_token `aud`), when known. */
  clientId: string | undefined;
  email: string | undefined;
  tokens: TokenSet | undefined;
  errorCode: string | undefined;
  /** Why a response was not stored; never contains token material. */
  detail: string | undefined;
  /** Profile captures: the user a held (no_subject) grant belongs to. */
  profile?: ProfileLink;
  /** The id_token was verified against the IdP's pinned issuer, JWKS and Okta's client id. */
  verified?: boolean;
  /**
   * Tokens the sidecar obtained itself (a refresh at the IdP's configured token endpoint), spooled
   * as the refresh's outbox: not a login seen on the wire, so not verified again.
   */
  obtainedByRefresh?: boolean;
  /** A refresh the refresh-token policy asked for (a scheduled rotation): no use of the grant, so idle_max keeps counting. */
  refreshedByPolicy?: boolean;
}
