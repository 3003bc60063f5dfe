// From Okta's request to a captured grant: the provider by the Okta IdP id, the user by `match`
// (login/email, or an identity claim carrying the upstream subject), through the matching the
// token exchange uses too (operations/find-grant.ts), with its bounded wait for a login that may
// still be on its way to Postgres.
import type { HookConfig, HookProvider } from '../config/hook-file.js';
import { claimKey, emailKey, findMatchedGrant, type GrantMatchResult, type InFlightCaptures, type UserKey } from '../operations/find-grant.js';
import type { GrantStore } from '../store/grants.js';
import type { TokenHookRequest } from './request.js';

export type { InFlightCaptures } from '../operations/find-grant.js';

export type Lookup = { outcome: 'no_provider' } | { outcome: 'no_user'; provider: HookProvider } | (GrantMatchResult & { provider: HookProvider });

export interface GrantFinderDependencies {
  config: HookConfig;
  store: Pick<GrantStore, 'findGrant' | 'findEmailCandidates'>;
  captures: InFlightCaptures;
}

function userKey(provider: HookProvider, request: TokenHookRequest): UserKey | undefined {
  if (provider.match.kind === 'email') {
    const email = request.identityClaims?.email;
    return emailKey([request.login, typeof email === 'string' ? email : undefined]);
  }
  // Okta puts mapped profile claims into the id_token; with no id_token minted, the access token's.
  const claim = provider.match.claim;
  return claimKey(request.identityClaims?.[claim] ?? request.accessClaims?.[claim]);
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
    const { store, captures, config } = this.dependencies;
    const found = await findMatchedGrant(store, provider, key, { sessionCreatedAt: request.sessionCreatedAt, waitMs: config.freshnessWaitMs, captures });
    return { ...found, provider };
  }
}
