// RFC 8693 token exchange as an operation: a service presents a user's Okta token and gets that
// user's upstream token at one IdP. The subject token is verified (subject-token.ts), its user
// matched to a captured grant as the Okta hook does (find-grant.ts), the access token refreshed
// first when it expires within the minimum TTL (the refresher: one refresh per grant across
// callers in this process, and across sidecars through its claims), and the token answered. The
// front door (exchange/) authenticates the client and turns the outcome into HTTP; every outcome
// carries what the audit row records, never a token.
import type { JWTPayload } from 'jose';
import type { ExchangeConfig, ExchangeProvider } from '../config/exchange-file.js';
import type { ExchangeOutcome } from '../store/access-events.js';
import { isPostgresUnavailable, VaultError } from '../store/errors.js';
import { DecryptError } from '../keys/key-ring.js';
import type { GrantRecord, GrantStore } from '../store/grants.js';
import { claimKey, emailKey, findMatchedGrant, type UserKey } from './find-grant.js';
import type { GrantRefresher } from './refresh.js';
import type { SubjectTokenType, SubjectTokenVerifier } from './subject-token.js';

export const TOKEN_TYPE_URN: Record<SubjectTokenType, string> = {
  access_token: 'urn:ietf:params:oauth:token-type:access_token',
  id_token: 'urn:ietf:params:oauth:token-type:id_token',
};

/** What the front door read from the request, checked for shape. */
export interface ExchangeRequest {
  subjectToken: string;
  subjectTokenType: SubjectTokenType;
  /** The token-tap IdP name. */
  audience: string;
  requestedTokenType: SubjectTokenType;
  /** Whether the client's API key may use this IdP. */
  mayUseIdp: (idp: string) => boolean;
}

/** Outcomes, as audited and counted (declared with the audit table); each answers one OAuth error, or 200. */
export type { ExchangeOutcome } from '../store/access-events.js';

/** What the audit row and the log line say about a call (no token, no claim beyond the user's id). */
export interface ExchangeNotes {
  idp?: string;
  /** The upstream subject, once matched. */
  subject?: string;
  /** The Okta user: the subject token's `uid`, else its `sub`. */
  oktaUser?: string;
  detail?: string;
}

export interface IssuedToken {
  access_token: string;
  issued_token_type: string;
  token_type: 'Bearer' | 'N_A';
  expires_in?: number;
  scope?: string;
}

export type ExchangeResult =
  | { outcome: 'ok'; token: IssuedToken; notes: ExchangeNotes }
  /** `description`: for the caller (RFC 6749 error_description), safe to show. */
  | { outcome: Exclude<ExchangeOutcome, 'ok'>; description: string; notes: ExchangeNotes };

export interface TokenExchangeDependencies {
  config: ExchangeConfig;
  store: Pick<GrantStore, 'findGrant' | 'findEmailCandidates'>;
  refresher: Pick<GrantRefresher, 'refresh'>;
  verifier: Pick<SubjectTokenVerifier, 'verify'>;
  /** TOKEN_TAP_EXCHANGE_MIN_TTL_SECONDS. */
  minTtlSeconds: number;
  /** How long a caller waits for another sidecar's refresh of the grant (default 10 s). */
  waitForRefreshMs?: number;
}

const EMAIL = /^[^\s@]+@[^\s@]+$/;

const MATCH_WORDS: Record<'no_grant' | 'ambiguous' | 'unverified' | 'email_unverified', string> = {
  no_grant: 'no captured grant for this user at this IdP',
  ambiguous: "grants of several upstream users carry this user's email; none is used",
  unverified: "the user's grant is not verified",
  email_unverified: "the user's grant does not say the IdP verified this email",
};

function oktaUserOf(claims: JWTPayload): string | undefined {
  const value = claims.uid ?? claims.sub;
  return typeof value === 'string' ? value : undefined;
}

/** The subject token's IdP claim names the provider's Okta IdP. */
export function cameThrough(claims: JWTPayload, provider: Pick<ExchangeProvider, 'oktaIdpId' | 'idpClaim'>): boolean {
  return claims[provider.idpClaim] === provider.oktaIdpId;
}

/**
 * The user by the provider's `match`: `email` (only when the token says `email_verified: true` for
 * it; a user may set an address they do not own), and `sub` when it is an address (Okta's access
 * tokens carry the login there), or a claim. Called once the token showed its IdP (cameThrough).
 */
function userKeyOf(claims: JWTPayload, provider: ExchangeProvider): UserKey | undefined {
  if (provider.match.kind === 'claim') return claimKey(claims[provider.match.claim]);
  const email = typeof claims.email === 'string' && claims.email_verified === true ? claims.email : undefined;
  // The login in `sub` carries no email_verified: it is trusted only because the token showed the IdP
  // its session came through (cameThrough) and the grant it opens must itself be vouched (findGrant).
  const sub = typeof claims.sub === 'string' && EMAIL.test(claims.sub) ? claims.sub : undefined;
  return emailKey([email, sub]);
}

function secondsUntil(at: Date | null, now: number): number | undefined {
  return at ? Math.max(0, Math.floor((at.getTime() - now) / 1000)) : undefined;
}

/** The 200 answer (RFC 8693 §2.2.1) for the stored grant. */
export function issuedToken(grant: GrantRecord, requested: SubjectTokenType, now = Date.now()): IssuedToken | undefined {
  if (requested === 'id_token') {
    if (!grant.idToken) return undefined;
    const expiresIn = secondsUntil(grant.idTokenExpiresAt, now);
    return {
      access_token: grant.idToken,
      issued_token_type: TOKEN_TYPE_URN.id_token,
      token_type: 'N_A',
      ...(expiresIn === undefined ? {} : { expires_in: expiresIn }),
    };
  }
  if (!grant.accessToken) return undefined;
  const expiresIn = secondsUntil(grant.accessTokenExpiresAt, now);
  return {
    access_token: grant.accessToken,
    issued_token_type: TOKEN_TYPE_URN.access_token,
    token_type: 'Bearer',
    ...(expiresIn === undefined ? {} : { expires_in: expiresIn }),
    ...(grant.scope.length > 0 ? { scope: grant.scope.join(' ') } : {}),
  };
}

/**
 * Whether the stored access token is refreshed before it is answered: when it expires within the
 * minimum TTL, unless the grant was refreshed within that TTL and the token still works. An IdP
 * whose access tokens live shorter than the TTL would otherwise be asked on every exchange.
 */
export function needsRefresh(grant: Pick<GrantRecord, 'accessTokenExpiresAt' | 'lastRefreshedAt'>, now: number, minTtlMs: number): boolean {
  const expiresAt = grant.accessTokenExpiresAt?.getTime();
  if (expiresAt === undefined || expiresAt - now >= minTtlMs) return false;
  const refreshedAt = grant.lastRefreshedAt?.getTime();
  return !(refreshedAt !== undefined && now - refreshedAt < minTtlMs && expiresAt > now);
}

export class TokenExchange {
  constructor(private readonly dependencies: TokenExchangeDependencies) {}

  async exchange(request: ExchangeRequest): Promise<ExchangeResult> {
    const notes: ExchangeNotes = {};
    try {
      return await this.run(request, notes);
    } catch (error) {
      if (isPostgresUnavailable(error))
        return { outcome: 'unavailable', description: 'the token store cannot be reached; try again', notes: { ...notes, detail: 'Postgres unavailable' } };
      throw error;
    }
  }

  private async run(request: ExchangeRequest, notes: ExchangeNotes): Promise<ExchangeResult> {
    const { config, verifier, store } = this.dependencies;
    const refuse = (outcome: Exclude<ExchangeOutcome, 'ok'>, description: string, detail = description): ExchangeResult => ({
      outcome,
      description,
      notes: { ...notes, detail },
    });
    const provider = config.providers.get(request.audience);
    if (provider) notes.idp = provider.idp;
    if (!provider || !request.mayUseIdp(request.audience)) {
      // Both say the same to the caller: which IdPs exist is not told to a key that may not use them.
      return refuse(
        'invalid_target',
        'audience is not an IdP this client may exchange tokens for',
        provider ? 'the API key may not use this IdP' : 'no provider for this audience in the exchange file',
      );
    }
    const check = await verifier.verify(request.subjectToken, request.subjectTokenType);
    if (!check.ok) {
      if (check.kind === 'unavailable') return refuse('unavailable', "the subject token's issuer keys cannot be fetched; try again", check.reason);
      return refuse('invalid_subject_token', `the subject_token does not verify: ${check.reason}`, `subject token refused: ${check.reason}`);
    }
    notes.oktaUser = oktaUserOf(check.claims);
    // Emails and claims are only as good as the IdP that set them: the user's Okta session must have
    // come through this upstream IdP, or an account of another IdP (or Okta's own) could name the
    // victim's address or upstream subject.
    if (!cameThrough(check.claims, provider)) {
      const why = check.claims[provider.idpClaim] === undefined ? 'carries no' : 'names another Okta IdP in its';
      return refuse('wrong_idp', `the subject_token does not show a sign-in through this IdP (it ${why} ${provider.idpClaim} claim)`);
    }
    const key = userKeyOf(check.claims, provider);
    if (!key)
      return refuse(
        'no_user',
        `the subject_token carries no ${provider.match.kind === 'email' ? 'email (an email claim with email_verified: true, or an address as sub)' : `${provider.match.claim} claim`}`,
      );
    if ('subject' in key) notes.subject = key.subject;
    const readAt = new Date();
    const found = await findMatchedGrant(store, provider, key);
    if (found.outcome !== 'found') {
      if ('grant' in found) notes.subject = found.grant.subject;
      if (found.outcome === 'no_grant' && found.subject) notes.subject = found.subject;
      return refuse(found.outcome, MATCH_WORDS[found.outcome]);
    }
    notes.subject = found.grant.subject;
    let grant = found.grant;
    if (request.requestedTokenType === 'access_token') {
      const fresh = await this.freshGrant(grant, readAt, notes);
      if ('outcome' in fresh) return fresh;
      grant = fresh.grant;
    }
    const token = issuedToken(grant, request.requestedTokenType);
    if (!token) return refuse('no_token', `the user's grant holds no ${request.requestedTokenType} (the IdP sent none)`);
    return { outcome: 'ok', token, notes };
  }

  /** The grant with an access token good for at least the minimum TTL: refreshed first when it is not. */
  private async freshGrant(grant: GrantRecord, readAt: Date, notes: ExchangeNotes): Promise<{ grant: GrantRecord } | ExchangeResult> {
    const minTtlMs = this.dependencies.minTtlSeconds * 1000;
    const now = Date.now();
    const note = (detail: string) => (notes.detail = detail);
    if (!needsRefresh(grant, now, minTtlMs)) {
      if (grant.accessTokenExpiresAt && grant.accessTokenExpiresAt.getTime() - now < minTtlMs)
        note('access token expires within the minimum TTL but was refreshed within it; served as is');
      return { grant };
    }
    const stillGood = (grant.accessTokenExpiresAt?.getTime() ?? 0) > now;
    if (!grant.refreshToken) {
      if (stillGood) {
        note('access token expires within the minimum TTL and the grant has no refresh token; served as is');
        return { grant };
      }
      return {
        outcome: 'refresh_refused',
        description: "the user's upstream access token has expired and there is no refresh token; the user must sign in again",
        notes: { ...notes, detail: 'expired, no refresh token' },
      };
    }
    try {
      const waitUntil = Date.now() + (this.dependencies.waitForRefreshMs ?? 10_000);
      const result = await this.dependencies.refresher.refresh(grant.idp, grant.subject, { arrivedAt: readAt, onlyIfExpiringWithinMs: minTtlMs, waitUntil });
      note(result.refreshedByThisCall ? 'refreshed at the IdP first' : 'served a refresh made by another call');
      return { grant: result.grant };
    } catch (error) {
      if (!(error instanceof VaultError)) throw error;
      // A grant that does not open (tampered, or sealed under a key this sidecar lacks) is our fault,
      // not the user's: an internal error with its warn line, never "sign in again".
      if (error.cause instanceof DecryptError) throw error.cause;
      if (error.outcome === 'unavailable') {
        // An IdP that is down should not take away a token that still works.
        if (stillGood) {
          note(`refresh failed (${error.message}); served the current access token`);
          return { grant };
        }
        return {
          outcome: 'unavailable',
          description: 'the upstream IdP cannot be reached to refresh the token; try again',
          notes: { ...notes, detail: error.message },
        };
      }
      // Revoked (the IdP answered invalid_grant, now or before), no client for the IdP, or refused.
      return {
        outcome: 'refresh_refused',
        description: 'the upstream token cannot be refreshed (the grant is revoked, or the IdP refused); the user may have to sign in again',
        notes: { ...notes, detail: error.message },
      };
    }
  }
}
