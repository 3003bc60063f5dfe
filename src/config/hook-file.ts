// The file named by TOKEN_TAP_HOOK_CONFIG (YAML or JSON): how Okta's token inline hook is
// authenticated, and which upstream id_token claims go into which Okta token, per Okta IdP. Every
// problem is collected; secrets come only from the environment or a file, and no message quotes one.
//
//   authentication:
//     header: { name: Authorization, value_env: OKTA_HOOK_SECRET }   # or value_file: /run/secrets/hook
//     # oauth: { issuer: https://example.okta.com/oauth2/aus..., audience: api://token-tap-hook, scope: token_tap.hook, client_id: 0oa... }
//   freshness_wait_ms: 1000
//   providers:
//     - okta_idp_id: 0oa1abcdEXAMPLE
//       idp: entra
//       match: email                     # or claim:<Okta identity claim carrying the upstream sub>
//       identity_claims: { upstream_groups: groups }
//       access_claims: { upstream_tid: tid }
//       require_grant: false
//       allow_unverified: false
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { readHttpsUrl, readSecretReference, readYamlFile } from './values.js';
import { HOOK_CONFIG } from './settings.js';

export const HOOK_CONFIG_ENV = HOOK_CONFIG.name;

/**
 * Claim names Okta will not let a hook add (DESIGN §6a, Okta's token inline hook reference). Upstream
 * values go under names of their own (upstream_groups, not groups).
 */
export const OKTA_RESERVED_CLAIMS: ReadonlySet<string> = new Set([
  'acr', 'amr', 'at_hash', 'aud', 'auth_time', 'c_hash', 'cid', 'exp', 'groups', 'iat', 'idp', 'idp_iss',
  'iss', 'jti', 'nbf', 'nonce', 'scp', 'sid', 'sub', 'uid', 'ver',
]);

export const DEFAULT_FRESHNESS_WAIT_MS = 1_000;
/** The hook must answer well inside Okta's 3 s; the wait for an in-flight capture is part of that. */
const MAX_FRESHNESS_WAIT_MS = 2_000;

export type HookAuthentication =
  | { kind: 'header'; name: string; value: string }
  /** clientId: the Okta app whose client-credentials token Okta sends (its `cid`); scope: one it must carry. */
  | { kind: 'oauth'; issuer: string; audience: string; scope: string; clientId: string; jwksUri: URL | undefined };

export type GrantMatch = { kind: 'email' } | { kind: 'claim'; claim: string };

export interface HookProvider {
  oktaIdpId: string;
  idp: string;
  match: GrantMatch;
  /** Okta claim name -> dotted path in the upstream id_token's claims. */
  identityClaims: ReadonlyMap<string, string>;
  accessClaims: ReadonlyMap<string, string>;
  requireGrant: boolean;
  allowUnverified: boolean;
}

export interface HookConfig {
  authentication: HookAuthentication;
  providers: ReadonlyMap<string, HookProvider>;
  freshnessWaitMs: number;
}

const TOP_FIELDS = ['authentication', 'providers', 'freshness_wait_ms'];
const HEADER_FIELDS = ['name', 'value_env', 'value_file'];
const OAUTH_FIELDS = ['issuer', 'audience', 'scope', 'client_id', 'jwks_uri'];
const PROVIDER_FIELDS = ['okta_idp_id', 'idp', 'match', 'identity_claims', 'access_claims', 'require_grant', 'allow_unverified'];
const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$/;
const CLAIM_PATH = /^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/;

function isMapping(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function unknownFields(entry: Record<string, unknown>, known: readonly string[], where: string, problems: string[]): void {
  for (const field of Object.keys(entry)) {
    if (!known.includes(field)) problems.push(`${where}: unknown field "${field}" (known: ${known.join(', ')})`);
  }
}

function readSecret(entry: Record<string, unknown>, where: string, env: NodeJS.ProcessEnv, problems: string[]): string | undefined {
  if ('value' in entry) {
    problems.push(`${where}: the secret must not be written in the file; name an environment variable (value_env) or a file (value_file)`);
    return undefined;
  }
  return readSecretReference(entry, { env: 'value_env', file: 'value_file' }, where, '', env, problems);
}

function readAuthentication(value: unknown, file: string, env: NodeJS.ProcessEnv, problems: string[]): HookAuthentication | undefined {
  const where = `${file}: authentication`;
  if (!isMapping(value)) {
    problems.push(`${where} is missing: give header: {name, value_env | value_file} or oauth: {issuer, audience, scope, client_id}`);
    return undefined;
  }
  unknownFields(value, ['header', 'oauth'], where, problems);
  if (('header' in value) === ('oauth' in value)) {
    problems.push(`${where}: give exactly one of header or oauth`);
    return undefined;
  }
  if ('header' in value) {
    const header = value.header;
    if (!isMapping(header)) {
      problems.push(`${where}.header must be a mapping with name and value_env or value_file`);
      return undefined;
    }
    unknownFields(header, [...HEADER_FIELDS, 'value'], `${where}.header`, problems);
    const name = header.name ?? 'Authorization';
    if (typeof name !== 'string' || !/^[A-Za-z0-9-]{1,100}$/.test(name)) problems.push(`${where}.header.name must be an HTTP header name`);
    const secret = readSecret(header, `${where}.header`, env, problems);
    return typeof name === 'string' && secret ? { kind: 'header', name: name.toLowerCase(), value: secret } : undefined;
  }
  const oauth = value.oauth;
  if (!isMapping(oauth)) {
    problems.push(`${where}.oauth must be a mapping with issuer, audience, scope and client_id`);
    return undefined;
  }
  unknownFields(oauth, OAUTH_FIELDS, `${where}.oauth`, problems);
  const issuer = readHttpsUrl(oauth.issuer, `${where}.oauth.issuer`, problems);
  const audience = oauth.audience;
  if (typeof audience !== 'string' || audience === '') problems.push(`${where}.oauth.audience must be a non-empty string (the audience of Okta's authorization server for this hook)`);
  // Okta's authorization server mints tokens with this audience for end users too: only the scope
  // and the client id of Okta's hook client tell its client-credentials token apart.
  const scope = oauth.scope;
  const scopeOk = typeof scope === 'string' && /^\S+$/.test(scope);
  if (scope === undefined) problems.push(`${where}.oauth.scope is missing: give the scope Okta asks for when it gets the hook's token (e.g. token_tap.hook)`);
  else if (!scopeOk) problems.push(`${where}.oauth.scope must be one scope name`);
  const clientId = oauth.client_id;
  const clientIdOk = typeof clientId === 'string' && /^[\x21-\x7E]{1,200}$/.test(clientId);
  if (clientId === undefined) problems.push(`${where}.oauth.client_id is missing: give the client id of the Okta app Okta uses for the hook's client-credentials call (the token's cid)`);
  else if (!clientIdOk) problems.push(`${where}.oauth.client_id must be a client id (printable, no spaces)`);
  const jwksUri = oauth.jwks_uri === undefined ? undefined : readHttpsUrl(oauth.jwks_uri, `${where}.oauth.jwks_uri`, problems);
  if (!issuer || typeof audience !== 'string' || audience === '' || !scopeOk || !clientIdOk) return undefined;
  // The issuer is compared with `iss` as written; Okta's has no trailing slash.
  return { kind: 'oauth', issuer: String(oauth.issuer), audience, scope: scope as string, clientId: clientId as string, jwksUri };
}

function readClaims(value: unknown, where: string, problems: string[]): Map<string, string> {
  const claims = new Map<string, string>();
  if (value === undefined || value === null) return claims;
  if (!isMapping(value)) {
    problems.push(`${where} must be a mapping of <claim added to Okta's token>: <path in the upstream id_token>`);
    return claims;
  }
  for (const [target, source] of Object.entries(value)) {
    if (OKTA_RESERVED_CLAIMS.has(target)) {
      problems.push(`${where}: "${target}" is a claim name Okta reserves and will not let a hook add; use another name (e.g. upstream_${target})`);
      continue;
    }
    if (!CLAIM_NAME.test(target)) {
      problems.push(`${where}: "${target}" is not a usable claim name (letters, digits, _ . : -; starting with a letter or _)`);
      continue;
    }
    if (typeof source !== 'string' || !CLAIM_PATH.test(source)) {
      problems.push(`${where}.${target} must be a claim of the upstream id_token, or a dotted path into one (e.g. groups, address.country)`);
      continue;
    }
    claims.set(target, source);
  }
  return claims;
}

function readMatch(value: unknown, where: string, problems: string[]): GrantMatch | undefined {
  const text = value ?? 'email';
  if (text === 'email') return { kind: 'email' };
  const claim = typeof text === 'string' ? /^claim:(.+)$/.exec(text)?.[1] : undefined;
  if (claim && CLAIM_NAME.test(claim)) return { kind: 'claim', claim };
  problems.push(`${where}.match must be "email" or "claim:<name of the Okta identity claim carrying the upstream subject>"`);
  return undefined;
}

function readBoolean(value: unknown, where: string, problems: string[]): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') problems.push(`${where} must be true or false`);
  return value === true;
}

function readProvider(value: unknown, index: number, file: string, problems: string[]): HookProvider | undefined {
  const where = `${file}: providers[${index}]`;
  if (!isMapping(value)) {
    problems.push(`${where} must be a mapping with okta_idp_id, idp and the claims to add`);
    return undefined;
  }
  const before = problems.length;
  unknownFields(value, PROVIDER_FIELDS, where, problems);
  const { okta_idp_id: oktaIdpId, idp } = value;
  if (typeof oktaIdpId !== 'string' || !/^[A-Za-z0-9]{1,64}$/.test(oktaIdpId)) problems.push(`${where}.okta_idp_id must be the Okta IdP id (e.g. 0oa1abcdEXAMPLE)`);
  if (typeof idp !== 'string' || !isIdpName(idp)) problems.push(`${where}.idp must be the token-tap IdP name of the Envoy route (${IDP_NAME_RULE})`);
  const match = readMatch(value.match, where, problems);
  const identityClaims = readClaims(value.identity_claims, `${where}.identity_claims`, problems);
  const accessClaims = readClaims(value.access_claims, `${where}.access_claims`, problems);
  if (value.identity_claims === undefined && value.access_claims === undefined) problems.push(`${where}: give identity_claims and/or access_claims (nothing would be added)`);
  const requireGrant = readBoolean(value.require_grant, `${where}.require_grant`, problems);
  const allowUnverified = readBoolean(value.allow_unverified, `${where}.allow_unverified`, problems);
  if (problems.length > before || !match) return undefined;
  return { oktaIdpId: oktaIdpId as string, idp: idp as string, match, identityClaims, accessClaims, requireGrant, allowUnverified };
}

/** Reads the file named by TOKEN_TAP_HOOK_CONFIG. Every problem joins `problems`; undefined when any. */
export function loadHookConfig(env: NodeJS.ProcessEnv, problems: string[]): HookConfig | undefined {
  const file = env[HOOK_CONFIG_ENV];
  if (!file) {
    problems.push(`the Okta hook listener is on but ${HOOK_CONFIG_ENV} is not set: name the hook's YAML file (see docs/okta-hook.md)`);
    return undefined;
  }
  const read = readYamlFile(file, HOOK_CONFIG_ENV, problems);
  if (!read) return undefined;
  const root = read.root;
  if (!isMapping(root)) {
    problems.push(`${file}: expected a mapping with authentication and providers`);
    return undefined;
  }
  const before = problems.length;
  unknownFields(root, TOP_FIELDS, file, problems);
  const authentication = readAuthentication(root.authentication, file, env, problems);
  const waitRaw = root.freshness_wait_ms ?? DEFAULT_FRESHNESS_WAIT_MS;
  if (typeof waitRaw !== 'number' || !Number.isInteger(waitRaw) || waitRaw < 0 || waitRaw > MAX_FRESHNESS_WAIT_MS) {
    problems.push(`${file}: freshness_wait_ms must be an integer from 0 to ${MAX_FRESHNESS_WAIT_MS} (Okta waits 3 s for the whole answer)`);
  }
  const providers = new Map<string, HookProvider>();
  if (!Array.isArray(root.providers) || root.providers.length === 0) {
    problems.push(`${file}: providers must be a list with one entry per Okta IdP`);
  } else {
    // A repeated id is named by the positions, not by the id (no message quotes a value from the file).
    const firstAt = new Map<string, number>();
    root.providers.forEach((value, index) => {
      const provider = readProvider(value, index, file, problems);
      if (!provider) return;
      const first = firstAt.get(provider.oktaIdpId);
      if (first !== undefined) problems.push(`${file}: providers[${index}]: okta_idp_id is given twice (as in providers[${first}])`);
      else firstAt.set(provider.oktaIdpId, index);
      providers.set(provider.oktaIdpId, provider);
    });
  }
  if (problems.length > before || !authentication) return undefined;
  return { authentication, providers, freshnessWaitMs: waitRaw as number };
}
