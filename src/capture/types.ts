// The shapes that flow through capture: what Envoy showed us, and what we make of it.

/** An upstream token response as observed through ext_proc. Built by extproc/Exchange. */
export interface ObservedResponse {
  /** The IdP name from the route's ext_proc metadata; undefined when the route names none. */
  idp: string | undefined;
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

export type CaptureOutcome = 'stored' | 'idp_error' | 'unparseable' | 'too_large' | 'no_subject';

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
}
