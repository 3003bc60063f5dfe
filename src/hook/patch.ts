// The hook's answer: JSON Patch `add` ops on /claims/<name> for the upstream claims the provider
// maps, one command per token Okta is minting. Pure.
import type { HookProvider } from '../config/hook-file.js';
import type { TokenHookRequest } from './request.js';

export const IDENTITY_PATCH = 'com.okta.identity.patch';
export const ACCESS_PATCH = 'com.okta.access.patch';

export interface PatchOp {
  op: 'add';
  path: string;
  value: unknown;
}

export interface HookCommand {
  type: typeof IDENTITY_PATCH | typeof ACCESS_PATCH;
  value: PatchOp[];
}

/** The value at a dotted path of the claims; undefined when any step is missing. */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  let value: unknown = claims;
  for (const step of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, step)) return undefined;
    value = (value as Record<string, unknown>)[step];
  }
  return value;
}

/** RFC 6901: "~" and "/" in a name are escaped in a JSON Pointer. */
function pointer(name: string): string {
  return `/claims/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

function ops(mapping: ReadonlyMap<string, string>, upstream: Record<string, unknown>): PatchOp[] {
  const result: PatchOp[] = [];
  for (const [target, path] of mapping) {
    const value = claimAt(upstream, path);
    // Absent upstream claims are left out: an explicit null would still add the claim.
    if (value === undefined || value === null) continue;
    result.push({ op: 'add', path: pointer(target), value });
  }
  return result;
}

/** The provider's idp_claim: which Okta IdP the session came through (the provider is found by it). */
function idpOps(provider: HookProvider): PatchOp[] {
  return provider.idpClaim === undefined ? [] : [{ op: 'add', path: pointer(provider.idpClaim), value: provider.oktaIdpId }];
}

/**
 * Commands for the tokens the request carries only (Okta rejects a patch for a token it is not
 * minting); a command without ops is left out. `upstreamClaims` undefined: no grant matched, only
 * the provider's idp_claim is added (the session came through its IdP all the same).
 */
export function buildCommands(provider: HookProvider, request: TokenHookRequest, upstreamClaims: Record<string, unknown> | undefined): HookCommand[] {
  const commands: HookCommand[] = [];
  const upstream = (mapping: ReadonlyMap<string, string>) => (upstreamClaims ? ops(mapping, upstreamClaims) : []);
  if (request.identityClaims) {
    const value = [...upstream(provider.identityClaims), ...idpOps(provider)];
    if (value.length > 0) commands.push({ type: IDENTITY_PATCH, value });
  }
  if (request.accessClaims) {
    const value = [...upstream(provider.accessClaims), ...idpOps(provider)];
    if (value.length > 0) commands.push({ type: ACCESS_PATCH, value });
  }
  return commands;
}

/** Names of the claims added, for the log and the audit row (never their values). */
export function addedClaimNames(commands: readonly HookCommand[]): string[] {
  return commands.flatMap((command) => command.value.map((op) => `${command.type === IDENTITY_PATCH ? 'id' : 'access'}:${op.path.slice('/claims/'.length)}`));
}
