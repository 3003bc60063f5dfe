// Grants as the CLI prints them: tokens decrypted, dates as ISO strings, snake_case keys.
import type { GrantRecord, PendingGrant } from '../store/grants.js';

/** A grant as operators see it: tokens decrypted, dates as ISO strings. */
export function grantToJson(grant: GrantRecord): Record<string, unknown> {
  return {
    idp: grant.idp,
    subject: grant.subject,
    status: grant.status,
    issuer: grant.issuer,
    client_id: grant.clientId,
    email: grant.email,
    scope: grant.scope,
    token_type: grant.tokenType,
    access_token: grant.accessToken,
    refresh_token: grant.refreshToken,
    id_token: grant.idToken,
    access_token_expires_at: grant.accessTokenExpiresAt?.toISOString() ?? null,
    refresh_token_expires_at: grant.refreshTokenExpiresAt?.toISOString() ?? null,
    id_token_expires_at: grant.idTokenExpiresAt?.toISOString() ?? null,
    captured_at: grant.capturedAt.toISOString(),
    updated_at: grant.updatedAt.toISOString(),
    version: grant.version,
    verified: grant.verified,
    key_id: grant.keyId,
    claims: grant.claims,
    extras: grant.extras,
  };
}

/** Held grants (no user known yet) as operators see them. */
export function pendingToJson(pending: PendingGrant): Record<string, unknown> {
  return {
    capture_id: pending.captureId,
    idp: pending.idp,
    observed_at: pending.observedAt.toISOString(),
    issuer: pending.issuer,
    client_id: pending.clientId,
    email: pending.email,
    scope: pending.tokens.scope,
    token_type: pending.tokens.tokenType ?? null,
    access_token: pending.tokens.accessToken ?? null,
    refresh_token: pending.tokens.refreshToken ?? null,
    expires_in: pending.tokens.expiresIn ?? null,
    extras: pending.tokens.extras,
  };
}
