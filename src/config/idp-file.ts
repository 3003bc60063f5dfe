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
import type { z } from 'zod';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { AUTH_METHODS, IdpClient, type IdpClients } from '../idp/client.js';
import type { IdpVerificationSettings } from '../idp/verify.js';
import { parseDuration, refreshTokenPolicySchema, type RefreshTokenPolicy } from './refresh-token-policy.js';
import { IDP_CONFIG } from './settings.js';
import { ALWAYS, addProblem, forbidden, httpsUrl, readYamlWithSchema, secretFromEnv, secretFromFile, strictMapping } from './yaml-schema.js';
import { zod } from './zod.js';

export type { IdpVerificationSettings };

export const IDP_CONFIG_ENV = IDP_CONFIG.name;

/** Fields of the refresh/revocation client; an entry with none of them is for verification only. */
const CLIENT_FIELDS = ['token_url', 'client_secret_env', 'client_secret_file', 'revocation_url', 'auth_method'];
const DEFAULT_TIMEOUT_MS = 10_000;

export interface IdpConfig {
  clients: IdpClients;
  /** IdPs whose captured id_tokens are verified; the others are stored unverified. */
  verification: ReadonlyMap<string, IdpVerificationSettings>;
  /** IdPs with a refresh_token_policy (the policy runner, the report). */
  policies: ReadonlyMap<string, RefreshTokenPolicy>;
}

/**
 * The fields of one IdP entry (no defaults here: the rules between fields read what was written;
 * `toClient` and `loadIdpConfig` fill them in). Another block (an optional key, e.g. `refresh_token_policy`) joins
 * here with its own schema; the rules between fields are in `entryRules`.
 */
export function idpEntryShape(env: NodeJS.ProcessEnv) {
  const z = zod();
  return {
    issuer: httpsUrl({ noQuery: true }).optional(),
    jwks_uri: httpsUrl().optional(),
    client_id: z.string({ error: 'must be a non-empty string' }).min(1, 'must be a non-empty string'),
    timeout_ms: z
      .number({ error: 'must be an integer from 1 to 120000' })
      .int('must be an integer from 1 to 120000')
      .min(1, 'must be an integer from 1 to 120000')
      .max(120_000, 'must be an integer from 1 to 120000')
      .optional(),
    token_url: httpsUrl().optional(),
    client_secret_env: secretFromEnv(env, 'client_secret_env').optional(),
    client_secret_file: secretFromFile().optional(),
    revocation_url: httpsUrl().optional(),
    auth_method: z.enum(AUTH_METHODS, { error: `must be one of ${AUTH_METHODS.join(', ')}` }).optional(),
    refresh_token_policy: refreshTokenPolicySchema().optional(),
    client_secret: forbidden('must not be written in the file; name an environment variable (client_secret_env) or a file (client_secret_file)'),
  };
}

const ENTRY_MESSAGE = 'must be a mapping with issuer and client_id, and/or token_url, client_id and client_secret_env or client_secret_file';

/** What one field cannot say alone: which fields go together. Runs even when a field failed (the entry is read as it is). */
function entryRules(entry: unknown, ctx: z.RefinementCtx): void {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return;
  const fields = entry as Record<string, unknown>;
  const verifies = fields.issuer !== undefined;
  if (fields.jwks_uri !== undefined && !verifies) addProblem(ctx, ['jwks_uri'], 'needs issuer (the pinned issuer its keys belong to)');
  // An entry naming only issuer and client_id is for an IdP the vault never refreshes.
  const refreshes = CLIENT_FIELDS.some((field) => fields[field] !== undefined);
  policyRules(fields.refresh_token_policy, refreshes, ctx);
  if (!refreshes && !verifies)
    addProblem(ctx, [], ': give issuer (verification of captured id_tokens) and/or token_url with client_secret_env or client_secret_file (refresh)');
  if (!refreshes) return;
  if (fields.token_url === undefined) addProblem(ctx, ['token_url'], 'must be a URL');
  if ((fields.client_secret_env === undefined) === (fields.client_secret_file === undefined)) {
    addProblem(ctx, [], ': give exactly one of client_secret_env (an environment variable name) or client_secret_file (a path)');
  }
}

/** A policy's rules that need the rest of the entry: rotating is a refresh; a chain must rotate before it expires. */
function policyRules(policy: unknown, refreshes: boolean, ctx: z.RefinementCtx): void {
  if (policy === null || typeof policy !== 'object' || Array.isArray(policy)) return;
  // As written when a field failed, as parsed (RefreshTokenPolicy) when every field passed.
  const fields = policy as Record<string, unknown>;
  const maxAgeMs = msOf(fields.max_age ?? fields.maxAgeMs);
  const rotateEveryMs = msOf(fields.rotate_every ?? fields.rotateEveryMs);
  if (fields.rotate_every === undefined && fields.rotateEveryMs === undefined) return;
  const path = ['refresh_token_policy', 'rotate_every'];
  if (!refreshes) addProblem(ctx, path, "needs the IdP's token_url and client_secret_env or client_secret_file (rotating is a refresh)");
  if (maxAgeMs !== undefined && rotateEveryMs !== undefined && rotateEveryMs >= maxAgeMs) {
    addProblem(ctx, path, 'must be shorter than max_age (the chain would expire before it rotates)');
  }
}

function msOf(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  return typeof value === 'string' ? parseDuration(value) : undefined;
}

/** The schema of the file named by TOKEN_TAP_IDP_CONFIG; `env` holds the secrets its entries name. */
export function idpFileSchema(env: NodeJS.ProcessEnv) {
  const z = zod();
  const entry = strictMapping(idpEntryShape(env), ENTRY_MESSAGE, ['client_secret']).check(z.superRefine(entryRules, ALWAYS));
  const idps = z
    .record(z.string(), entry, {
      error: 'must be a mapping of IdP name to { issuer?, jwks_uri?, client_id, token_url?, client_secret_env | client_secret_file, revocation_url? }',
    })
    .check(
      z.superRefine((value, ctx) => {
        if (value === null || typeof value !== 'object') return;
        for (const name of Object.keys(value))
          if (!isIdpName(name)) addProblem(ctx, [name], `: IdP name must be ${IDP_NAME_RULE} (the name in the Envoy route)`);
      }, ALWAYS),
    );
  return strictMapping({ idps }, 'expected a mapping "idps:" of IdP name to its settings');
}

type IdpEntry = z.output<ReturnType<typeof idpFileSchema>>['idps'][string];

function toClient(name: string, entry: IdpEntry): IdpClient | undefined {
  const secret = entry.client_secret_env ?? entry.client_secret_file;
  if (!entry.token_url || secret === undefined) return undefined;
  const settings = { idp: name, tokenUrl: new URL(entry.token_url), revocationUrl: entry.revocation_url ? new URL(entry.revocation_url) : undefined };
  return new IdpClient(
    { ...settings, clientId: entry.client_id, authMethod: entry.auth_method ?? 'client_secret_basic', timeoutMs: entry.timeout_ms ?? DEFAULT_TIMEOUT_MS },
    secret,
  );
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
  const file = env[IDP_CONFIG_ENV];
  const read = file ? readYamlWithSchema(file, IDP_CONFIG_ENV, idpFileSchema(env), problems) : undefined;
  for (const [name, entry] of Object.entries(read?.idps ?? {})) {
    const client = toClient(name, entry);
    if (client) clients.set(name, client);
    if (entry.refresh_token_policy) policies.set(name, entry.refresh_token_policy);
    if (entry.issuer) {
      verification.set(name, {
        idp: name,
        issuer: entry.issuer,
        jwksUri: entry.jwks_uri ? new URL(entry.jwks_uri) : undefined,
        clientId: entry.client_id,
        timeoutMs: entry.timeout_ms ?? DEFAULT_TIMEOUT_MS,
      });
    }
  }
  return { clients, verification, policies };
}
