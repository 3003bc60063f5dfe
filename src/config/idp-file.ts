// The file named by TOKEN_TAP_IDP_CONFIG (YAML or JSON): per IdP, the pinned issuer whose keys a
// captured id_token must verify against, and the sidecar's own client credentials for refresh and
// revocation. Every problem is collected; secrets come only from the environment or a file, and no
// message quotes one.
//
//   idps:
//     acme:
//       issuer: https://acme.example                   # verification: JWKS from its discovery document
//       jwks_uri: https://acme.example/keys            # optional: instead of discovery
//       client_id: 0oa1example                         # Okta's client at the IdP (aud/azp of its id_tokens)
//       timeout_ms: 10000                              # optional: discovery, JWKS, refresh, revocation
//       # Refresh and revocation (leave out for an IdP the vault never refreshes):
//       token_url: https://acme.example/oauth2/token
//       client_secret_env: ACME_CLIENT_SECRET          # or client_secret_file: /run/secrets/acme
//       revocation_url: https://acme.example/oauth2/revoke   # optional
//       auth_method: client_secret_basic               # or client_secret_post
//       refresh_token_policy: { max_age: 90d, idle_max: 30d, rotate_every: 7d }  # optional (config/refresh-token-policy.ts)
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { readHttpsUrl, readSecretReference, readYamlFile } from './values.js';
import { AUTH_METHODS, IdpClient, type AuthMethod, type IdpClients } from '../idp/client.js';
import type { IdpVerificationSettings } from '../idp/verify.js';
import { readRefreshTokenPolicy, type RefreshTokenPolicy } from './refresh-token-policy.js';

export type { IdpVerificationSettings };

export const IDP_CONFIG_ENV = 'TOKEN_TAP_IDP_CONFIG';

/** Fields of the refresh/revocation client; an entry with none of them is for verification only. */
const CLIENT_FIELDS = ['token_url', 'client_secret_env', 'client_secret_file', 'revocation_url', 'auth_method'];
const FIELDS = new Set(['issuer', 'jwks_uri', 'client_id', 'timeout_ms', ...CLIENT_FIELDS, 'refresh_token_policy']);
const DEFAULT_TIMEOUT_MS = 10_000;

export interface IdpConfig {
  clients: IdpClients;
  /** IdPs whose captured id_tokens are verified; the others are stored unverified. */
  verification: ReadonlyMap<string, IdpVerificationSettings>;
  /** IdPs with a refresh_token_policy (the policy runner, the report). */
  policies: ReadonlyMap<string, RefreshTokenPolicy>;
}

interface IdpEntry {
  client: IdpClient | undefined;
  verification: IdpVerificationSettings | undefined;
  policy: RefreshTokenPolicy | undefined;
}

function readIssuer(value: unknown, where: string, problems: string[]): string | undefined {
  const url = readHttpsUrl(value, where, problems);
  if (!url) return undefined;
  // An issuer identifier has no query or fragment (OIDC Discovery 2); it is kept as written, since
  // `iss` is compared with it character for character.
  if (url.search !== '' || url.hash !== '') {
    problems.push(`${where} must have no query or fragment`);
    return undefined;
  }
  return value as string;
}

function readIdp(name: string, value: unknown, file: string, env: NodeJS.ProcessEnv, problems: string[]): IdpEntry | undefined {
  const where = `${file}: idps.${name}`;
  const before = problems.length;
  if (!isIdpName(name)) problems.push(`${where}: IdP name must be ${IDP_NAME_RULE} (the name in the Envoy route)`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${where} must be a mapping with issuer and client_id, and/or token_url, client_id and client_secret_env or client_secret_file`);
    return undefined;
  }
  const entry = value as Record<string, unknown>;
  if ('client_secret' in entry) problems.push(`${where}: client_secret must not be written in the file; name an environment variable (client_secret_env) or a file (client_secret_file)`);
  for (const field of Object.keys(entry)) {
    if (!FIELDS.has(field) && field !== 'client_secret') problems.push(`${where}: unknown field "${field}" (known: ${[...FIELDS].join(', ')})`);
  }
  const clientId = entry.client_id;
  if (typeof clientId !== 'string' || clientId === '') problems.push(`${where}.client_id must be a non-empty string`);
  const timeoutMs = entry.timeout_ms ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 120_000) {
    problems.push(`${where}.timeout_ms must be an integer from 1 to 120000`);
  }

  const verifies = entry.issuer !== undefined;
  const issuer = verifies ? readIssuer(entry.issuer, `${where}.issuer`, problems) : undefined;
  const jwksUri = entry.jwks_uri === undefined ? undefined : readHttpsUrl(entry.jwks_uri, `${where}.jwks_uri`, problems);
  if (entry.jwks_uri !== undefined && !verifies) problems.push(`${where}.jwks_uri needs issuer (the pinned issuer its keys belong to)`);

  // An entry naming only issuer and client_id is for an IdP the vault never refreshes.
  const refreshes = CLIENT_FIELDS.some((field) => entry[field] !== undefined);
  if (!refreshes && !verifies) {
    problems.push(`${where}: give issuer (verification of captured id_tokens) and/or token_url with client_secret_env or client_secret_file (refresh)`);
    return undefined;
  }
  const tokenUrl = refreshes ? readHttpsUrl(entry.token_url, `${where}.token_url`, problems) : undefined;
  const revocationUrl = entry.revocation_url === undefined ? undefined : readHttpsUrl(entry.revocation_url, `${where}.revocation_url`, problems);
  const authMethod = (entry.auth_method ?? 'client_secret_basic') as AuthMethod;
  if (!AUTH_METHODS.includes(authMethod)) problems.push(`${where}.auth_method must be one of ${AUTH_METHODS.join(', ')}`);
  const secret = refreshes ? readSecretReference(entry, { env: 'client_secret_env', file: 'client_secret_file' }, where, ` of IdP "${name}"`, env, problems) : undefined;
  const policy = entry.refresh_token_policy === undefined ? undefined : readRefreshTokenPolicy(entry.refresh_token_policy, `${where}.refresh_token_policy`, refreshes, problems);
  if (problems.length > before) return undefined;
  return {
    client: refreshes && tokenUrl && secret ? new IdpClient({ idp: name, tokenUrl, revocationUrl, clientId: clientId as string, authMethod, timeoutMs: timeoutMs as number }, secret) : undefined,
    verification: issuer ? { idp: name, issuer, jwksUri, clientId: clientId as string, timeoutMs: timeoutMs as number } : undefined,
    policy,
  };
}

/** The refresh/revocation clients of the file named by TOKEN_TAP_IDP_CONFIG. */
export function loadIdpClients(env: NodeJS.ProcessEnv, problems: string[]): IdpClients {
  return loadIdpConfig(env, problems).clients;
}

/** Reads the file named by TOKEN_TAP_IDP_CONFIG (YAML or JSON). Every problem is collected. */
export function loadIdpConfig(env: NodeJS.ProcessEnv, problems: string[]): IdpConfig {
  const clients = new Map<string, IdpClient>();
  const verification = new Map<string, IdpVerificationSettings>();
  const policies = new Map<string, RefreshTokenPolicy>();
  const config = { clients, verification, policies };
  const file = env[IDP_CONFIG_ENV];
  if (!file) return config;
  const read = readYamlFile(file, IDP_CONFIG_ENV, problems);
  if (!read) return config;
  const root = read.root;
  const idps = (root as { idps?: unknown } | null)?.idps;
  if (idps === null || typeof idps !== 'object' || Array.isArray(idps)) {
    problems.push(`${file}: expected a mapping "idps:" of IdP name to { issuer?, jwks_uri?, client_id, token_url?, client_secret_env | client_secret_file, revocation_url? }`);
    return config;
  }
  for (const field of Object.keys(root as object)) {
    if (field !== 'idps') problems.push(`${file}: unknown top-level field "${field}" (only "idps")`);
  }
  for (const [name, value] of Object.entries(idps as Record<string, unknown>)) {
    const read = readIdp(name, value, file, env, problems);
    if (read?.client) clients.set(name, read.client);
    if (read?.verification) verification.set(name, read.verification);
    if (read?.policy) policies.set(name, read.policy);
  }
  return config;
}
