// What the hook reads from Okta's com.okta.oauth2.tokens.transform request (DESIGN §6a). Only
// these fields are read; the rest of Okta's request is neither kept nor logged.
export const TOKEN_HOOK_EVENT_TYPE = 'com.okta.oauth2.tokens.transform';

export interface TokenHookRequest {
  /** The Okta IdP the user signed in through: the session's idp id, else the id_token's `idp` claim. */
  oktaIdpId: string | undefined;
  /** The Okta user's login (profile.login, else the session's login). */
  login: string | undefined;
  /** Claims of the id_token Okta is minting; undefined when it mints none. */
  identityClaims: Record<string, unknown> | undefined;
  /** Claims of the access token Okta is minting; undefined when it mints none. */
  accessClaims: Record<string, unknown> | undefined;
  /** When the Okta session began; undefined when the request has no session (e.g. a refresh). */
  sessionCreatedAt: Date | undefined;
}

function object(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Reads the request; a string saying what is wrong when it is not a token inline hook request. */
export function readTokenHookRequest(body: unknown): TokenHookRequest | string {
  const root = object(body);
  if (!root) return 'not a JSON object';
  if (root.eventType !== TOKEN_HOOK_EVENT_TYPE) return `eventType is not ${TOKEN_HOOK_EVENT_TYPE}`;
  const data = object(root.data);
  if (!data) return 'no data object';
  const context = object(data.context);
  const session = object(context?.session);
  const user = object(context?.user);
  const identity = object(data.identity);
  const access = object(data.access);
  const identityClaims = identity ? (object(identity.claims) ?? {}) : undefined;
  const accessClaims = access ? (object(access.claims) ?? {}) : undefined;
  const createdAt = text(session?.createdAt);
  const created = createdAt ? new Date(createdAt) : undefined;
  return {
    oktaIdpId: text(object(session?.idp)?.id) ?? text(identityClaims?.idp),
    login: text(object(user?.profile)?.login) ?? text(session?.login),
    identityClaims,
    accessClaims,
    sessionCreatedAt: created && !Number.isNaN(created.getTime()) ? created : undefined,
  };
}
