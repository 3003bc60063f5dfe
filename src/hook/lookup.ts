// From Okta's request to a captured grant: the provider by the Okta IdP id, the user by `match`
// (login/email, or an identity claim carrying the upstream subject), and, when the login that
// started this Okta session may still be on its way to Postgres, a bounded wait for it.
import type pg from 'pg';
import type { HookConfig, HookProvider } from '../config/hook-file.js';
import { subjectsByEmail } from '../store/grant-listing.js';
import type { GrantRecord, GrantStore } from '../store/grants.js';
import type { TokenHookRequest } from './request.js';

/** What the hook needs of the capture pump (ingest/pump.ts's CapturePump). */
export interface InFlightCaptures {
  hasInFlight(idp: string): boolean;
  waitForIdp(idp: string, timeoutMs: number): Promise<boolean>;
}

export type Lookup =
  | { outcome: 'no_provider' }
  | { outcome: 'no_user'; provider: HookProvider }
  | { outcome: 'no_grant'; provider: HookProvider; subject?: string; waitedMs: number }
  | { outcome: 'unverified'; provider: HookProvider; grant: GrantRecord; waitedMs: number }
  | { outcome: 'found'; provider: HookProvider; grant: GrantRecord; waitedMs: number };

export interface GrantFinderDependencies {
  config: HookConfig;
  pool: pg.Pool;
  store: Pick<GrantStore, 'findGrant'>;
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
    let grant = await this.read(provider.idp, key);
    let waitedMs = 0;
    // The upstream login that began this session may still be in the spool: wait for this IdP's
    // captures enqueued so far (bounded), then answer with what is stored.
    const created = request.sessionCreatedAt;
    const stale = !grant || (created !== undefined && grant.capturedAt.getTime() < created.getTime());
    if (stale && created !== undefined && this.dependencies.captures.hasInFlight(provider.idp)) {
      const started = Date.now();
      await this.dependencies.captures.waitForIdp(provider.idp, this.dependencies.config.freshnessWaitMs);
      waitedMs = Date.now() - started;
      grant = await this.read(provider.idp, key);
    }
    const subject = grant?.subject ?? ('subject' in key ? key.subject : undefined);
    if (!grant || grant.status !== 'active') return { outcome: 'no_grant', provider, ...(subject ? { subject } : {}), waitedMs };
    if (!grant.verified && !provider.allowUnverified) return { outcome: 'unverified', provider, grant, waitedMs };
    return { outcome: 'found', provider, grant, waitedMs };
  }

  private async read(idp: string, key: UserKey): Promise<GrantRecord | undefined> {
    if ('subject' in key) return this.dependencies.store.findGrant(idp, key.subject);
    for (const email of key.email) {
      // The most recently updated grant with that email claim (case-insensitive).
      const [subject] = await subjectsByEmail(this.dependencies.pool, idp, email, 1);
      if (subject !== undefined) return this.dependencies.store.findGrant(idp, subject);
    }
    return undefined;
  }
}
