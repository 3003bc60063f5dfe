// From Okta's request to a captured grant: the provider by the Okta IdP id, the user by `match`
// (login/email, or an identity claim carrying the upstream subject), and, when the login that
// started this Okta session may still be on its way to Postgres, a bounded wait for it.
import { vouchedEmail } from '../capture/jwt.js';
import type { HookConfig, HookProvider } from '../config/hook-file.js';
import type { GrantRecord, GrantStore } from '../store/grants.js';
import type { TokenHookRequest } from './request.js';

/**
 * Candidates whose vouching is not recorded in Postgres (rows from before migration 000007, or
 * written by a sidecar of an earlier release during a rolling update) are opened and their claims
 * read, at most this many, newest first. Every other candidate is weighed in SQL, however many.
 * Such rows are no longer made once every sidecar runs a release with 000007.
 */
const MAX_UNCHECKED_CANDIDATES = 8;

/** What the hook needs of the capture pump (ingest/pump.ts's CapturePump). */
export interface InFlightCaptures {
  hasInFlight(idp: string): boolean;
  waitForIdp(idp: string, timeoutMs: number): Promise<boolean>;
}

export type Lookup =
  | { outcome: 'no_provider' }
  | { outcome: 'no_user'; provider: HookProvider }
  | { outcome: 'no_grant'; provider: HookProvider; subject?: string; waitedMs: number }
  /** match: email, and grants of two or more upstream subjects carry the email: none is used. */
  | { outcome: 'ambiguous'; provider: HookProvider; waitedMs: number }
  /** match: email, and the grant's id_token does not say `email_verified: true` for that email. */
  | { outcome: 'email_unverified'; provider: HookProvider; grant: GrantRecord; waitedMs: number }
  | { outcome: 'unverified'; provider: HookProvider; grant: GrantRecord; waitedMs: number }
  | { outcome: 'found'; provider: HookProvider; grant: GrantRecord; waitedMs: number };

export interface GrantFinderDependencies {
  config: HookConfig;
  store: Pick<GrantStore, 'findGrant' | 'findEmailCandidates'>;
  captures: InFlightCaptures;
}

type UserKey = { email: string[] } | { subject: string };

function userKey(provider: HookProvider, request: TokenHookRequest): UserKey | undefined {
  if (provider.match.kind === 'email') {
    const email = request.identityClaims?.email;
    const candidates = [request.login, typeof email === 'string' ? email : undefined].filter((value): value is string => Boolean(value));
    const distinct = [...new Set(candidates.map((value) => value.toLowerCase()))];
    return distinct.length > 0 ? { email: distinct } : undefined;
  }
  // Okta puts mapped profile claims into the id_token; with no id_token minted, the access token's.
  const claim = provider.match.claim;
  const value = request.identityClaims?.[claim] ?? request.accessClaims?.[claim];
  return typeof value === 'string' && value !== '' ? { subject: value } : undefined;
}

export class GrantFinder {
  constructor(private readonly dependencies: GrantFinderDependencies) {}

  provider(request: TokenHookRequest): HookProvider | undefined {
    return request.oktaIdpId === undefined ? undefined : this.dependencies.config.providers.get(request.oktaIdpId);
  }

  async find(request: TokenHookRequest): Promise<Lookup> {
    const provider = this.provider(request);
    if (!provider) return { outcome: 'no_provider' };
    const key = userKey(provider, request);
    if (!key) return { outcome: 'no_user', provider };
    let found = await this.read(provider, key);
    let waitedMs = 0;
    // The upstream login that began this session may still be in the spool: wait for this IdP's
    // captures enqueued so far (bounded), then answer with what is stored.
    const created = request.sessionCreatedAt;
    const stale = found !== 'ambiguous' && (!found || (created !== undefined && found.capturedAt.getTime() < created.getTime()));
    if (stale && created !== undefined && this.dependencies.captures.hasInFlight(provider.idp)) {
      const started = Date.now();
      await this.dependencies.captures.waitForIdp(provider.idp, this.dependencies.config.freshnessWaitMs);
      waitedMs = Date.now() - started;
      found = await this.read(provider, key);
    }
    if (found === 'ambiguous') return { outcome: 'ambiguous', provider, waitedMs };
    const grant = found;
    const subject = grant?.subject ?? ('subject' in key ? key.subject : undefined);
    if (grant?.status !== 'active') return { outcome: 'no_grant', provider, ...(subject ? { subject } : {}), waitedMs };
    if (!grant.verified && !provider.allowUnverified) return { outcome: 'unverified', provider, grant, waitedMs };
    if ('email' in key && !emailVerified(grant, key.email)) return { outcome: 'email_unverified', provider, grant, waitedMs };
    return { outcome: 'found', provider, grant, waitedMs };
  }

  private async read(provider: HookProvider, key: UserKey): Promise<GrantRecord | 'ambiguous' | undefined> {
    if ('subject' in key) return this.dependencies.store.findGrant(provider.idp, key.subject);
    // Every active grant of this IdP whose email claim is the login or the email (case-insensitive).
    // Anyone can set an email claim at some IdPs: only grants whose id_token says the IdP verified
    // that email count, and two upstream subjects with it mean "not sure", neither is used. (A
    // grant with an unverified email must not be able to shadow the real one, however many there
    // are: Postgres weighs every candidate.) Unverified grants are no candidates unless
    // allow_unverified. Without a vouched grant the newest candidate answers (email_unverified).
    const candidates = await this.dependencies.store.findEmailCandidates(provider.idp, key.email, {
      verifiedOnly: !provider.allowUnverified,
      uncheckedLimit: MAX_UNCHECKED_CANDIDATES,
    });
    const vouched = [...candidates.vouched, ...candidates.unchecked.filter((grant) => emailVerified(grant, key.email))];
    if (vouched.length > 1) return 'ambiguous';
    return vouched[0] ?? candidates.newest;
  }
}

/**
 * The grant's (verified or allowed) id_token asserts that the IdP verified the email we matched on:
 * `email_verified` is exactly true and `email` is that address. An IdP that sends no
 * `email_verified` (Entra ID, for one) never matches by email: use match: claim:<name>.
 */
function emailVerified(grant: GrantRecord, emails: readonly string[]): boolean {
  const vouched = vouchedEmail(grant.claims);
  return vouched !== undefined && emails.includes(vouched);
}
