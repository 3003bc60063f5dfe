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
//       idp_claim: upstream_idp          # also add this claim = okta_idp_id (for the token exchange's idp_claim)
//       require_grant: false
//       allow_unverified: false
import type { z } from 'zod';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { HOOK_CONFIG } from './settings.js';
import { escapeControlCharacters } from './values.js';
import { ALWAYS, addProblem, forbidden, httpsUrl, readYamlWithSchema, secretFromEnv, secretFromFile, strictMapping } from './yaml-schema.js';
import { zod } from './zod.js';

export const HOOK_CONFIG_ENV = HOOK_CONFIG.name;

/**
 * Claim names Okta will not let a hook add (DESIGN §6a, Okta's token inline hook reference). Upstream
 * values go under names of their own (upstream_groups, not groups).
 */
export const OKTA_RESERVED_CLAIMS: ReadonlySet<string> = new Set([
  'acr',
  'amr',
  'at_hash',
  'aud',
  'auth_time',
  'c_hash',
  'cid',
  'exp',
  'groups',
  'iat',
  'idp',
  'idp_iss',
  'iss',
  'jti',
  'nbf',
  'nonce',
  'scp',
  'sid',
  'sub',
  'uid',
  'ver',
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
  /**
   * A claim set to `oktaIdpId` in every token the hook answers for through this provider: Okta's
   * access tokens do not say which IdP the session came through (`idp` is reserved and only in
   * id_tokens), and the token exchange needs that (its provider's `idp_claim`).
   */
  idpClaim: string | undefined;
  requireGrant: boolean;
  allowUnverified: boolean;
}

export interface HookConfig {
  authentication: HookAuthentication;
  providers: ReadonlyMap<string, HookProvider>;
  freshnessWaitMs: number;
}

const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$/;
const CLAIM_PATH = /^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/;
const AUTHENTICATION_FORMS = 'header: {name, value_env | value_file} or oauth: {issuer, audience, scope, client_id}';

function isMapping(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A string matching `pattern`: `message` when it does not, `missing` when it is not there. */
function matching(pattern: RegExp, message: string, missing = message) {
  const z = zod();
  return z.string({ error: (issue) => (issue.input === undefined ? missing : message) }).regex(pattern, message);
}

/** Okta's HTTP-header scheme: the header's name (default Authorization) and the value Okta sends, from the environment or a file. */
function headerSchema(env: NodeJS.ProcessEnv) {
  const z = zod();
  const shape = {
    name: matching(/^[A-Za-z0-9-]{1,100}$/, 'must be an HTTP header name').nullish(),
    value_env: secretFromEnv(env, 'value_env').optional(),
    value_file: secretFromFile().optional(),
    value: forbidden('must not be written in the file; name an environment variable (value_env) or a file (value_file)'),
  };
  return strictMapping(shape, 'must be a mapping with name and value_env or value_file', ['value']).check(
    z.superRefine((header, ctx) => {
      if (isMapping(header) && (header.value_env === undefined) === (header.value_file === undefined)) {
        addProblem(ctx, [], ': give exactly one of value_env (an environment variable name) or value_file (a path)');
      }
    }, ALWAYS),
  );
}

// Okta's authorization server mints tokens with this audience for end users too: only the scope
// and the client id of Okta's hook client tell its client-credentials token apart.
function oauthSchema() {
  const z = zod();
  return strictMapping(
    {
      // Compared with `iss` as written (Okta's has no trailing slash); its discovery document is under it.
      issuer: httpsUrl({ noQuery: true }),
      audience: z
        .string({ error: "must be a non-empty string (the audience of Okta's authorization server for this hook)" })
        .min(1, "must be a non-empty string (the audience of Okta's authorization server for this hook)"),
      scope: matching(/^\S+$/, 'must be one scope name', "is missing: give the scope Okta asks for when it gets the hook's token (e.g. token_tap.hook)"),
      client_id: matching(
        /^[\x21-\x7E]{1,200}$/,
        'must be a client id (printable, no spaces)',
        "is missing: give the client id of the Okta app Okta uses for the hook's client-credentials call (the token's cid)",
      ),
      jwks_uri: httpsUrl().optional(),
    },
    'must be a mapping with issuer, audience, scope and client_id',
  );
}

function authenticationSchema(env: NodeJS.ProcessEnv) {
  const z = zod();
  return strictMapping({ header: headerSchema(env).optional(), oauth: oauthSchema().optional() }, `must be a mapping with ${AUTHENTICATION_FORMS}`).check(
    z.superRefine((authentication, ctx) => {
      if (isMapping(authentication) && (authentication.header === undefined) === (authentication.oauth === undefined))
        addProblem(ctx, [], ': give exactly one of header or oauth');
    }, ALWAYS),
  );
}

/** <claim added to Okta's token>: <claim, or dotted path, in the upstream id_token>; the names Okta refuses are refused here. */
function claimsSchema() {
  const z = zod();
  return z
    .record(z.string(), matching(CLAIM_PATH, 'must be a claim of the upstream id_token, or a dotted path into one (e.g. groups, address.country)'), {
      error: "must be a mapping of <claim added to Okta's token>: <path in the upstream id_token>",
    })
    .check(
      z.superRefine((claims, ctx) => {
        if (!isMapping(claims)) return;
        for (const target of Object.keys(claims)) {
          // A key may be shown (it is a name the operator chose, never a secret), with its control characters escaped.
          if (OKTA_RESERVED_CLAIMS.has(target))
            addProblem(ctx, [], `: "${target}" is a claim name Okta reserves and will not let a hook add; use another name (e.g. upstream_${target})`);
          else if (!CLAIM_NAME.test(target))
            addProblem(ctx, [], `: "${escapeControlCharacters(target)}" is not a usable claim name (letters, digits, _ . : -; starting with a letter or _)`);
        }
      }, ALWAYS),
    )
    .transform((claims): ReadonlyMap<string, string> => new Map(Object.entries(claims)));
}

const MATCH_MESSAGE = 'must be "email" or "claim:<name of the Okta identity claim carrying the upstream subject>"';

/** `match:` of the hook's and the exchange's files: email, or claim:<name>; `message` when it is neither. */
export function grantMatchSchema(message: string) {
  const z = zod();
  return z
    .string({ error: message })
    .refine((text) => text === 'email' || (text.startsWith('claim:') && CLAIM_NAME.test(text.slice('claim:'.length))), message)
    .transform((text): GrantMatch => (text === 'email' ? { kind: 'email' } : { kind: 'claim', claim: text.slice('claim:'.length) }));
}

function providerSchema() {
  const z = zod();
  return strictMapping(
    {
      okta_idp_id: matching(/^[A-Za-z0-9]{1,64}$/, 'must be the Okta IdP id (e.g. 0oa1abcdEXAMPLE)'),
      idp: z
        .string({ error: `must be the token-tap IdP name of the Envoy route (${IDP_NAME_RULE})` })
        .refine(isIdpName, `must be the token-tap IdP name of the Envoy route (${IDP_NAME_RULE})`),
      match: grantMatchSchema(MATCH_MESSAGE).nullish(),
      identity_claims: claimsSchema().nullish(),
      access_claims: claimsSchema().nullish(),
      idp_claim: matching(CLAIM_NAME, 'must be a claim name (letters, digits, _ . : -; starting with a letter or _), e.g. upstream_idp')
        .refine(
          (name) => !OKTA_RESERVED_CLAIMS.has(name),
          "must not be a claim name Okta reserves (idp among them; Okta's id_tokens carry idp already): e.g. upstream_idp",
        )
        .nullish(),
      require_grant: z.boolean({ error: 'must be true or false' }).optional(),
      allow_unverified: z.boolean({ error: 'must be true or false' }).optional(),
    },
    'must be a mapping with okta_idp_id, idp and the claims to add',
  ).check(
    z.superRefine((provider, ctx) => {
      if (!isMapping(provider)) return;
      if (provider.identity_claims === undefined && provider.access_claims === undefined && provider.idp_claim === undefined)
        addProblem(ctx, [], ': give identity_claims, access_claims and/or idp_claim (nothing would be added)');
      const idpClaim = provider.idp_claim;
      // Two values for one claim: Okta would take one of them.
      const targets = (claims: unknown): boolean =>
        typeof idpClaim === 'string' && (claims instanceof Map ? claims.has(idpClaim) : isMapping(claims) && Object.hasOwn(claims, idpClaim));
      const mapped = targets(provider.identity_claims) || targets(provider.access_claims);
      if (mapped) addProblem(ctx, ['idp_claim'], ': is also a target of identity_claims or access_claims; give it a name of its own');
    }, ALWAYS),
  );
}

const PROVIDERS_MESSAGE = 'must be a list with one entry per Okta IdP';

function providersSchema() {
  const z = zod();
  return z
    .array(providerSchema(), { error: PROVIDERS_MESSAGE })
    .min(1, PROVIDERS_MESSAGE)
    .check(
      z.superRefine((providers, ctx) => {
        if (!Array.isArray(providers)) return;
        // A repeated id is named by the positions, not by the id (no message quotes a value from the file).
        const firstAt = new Map<string, number>();
        providers.forEach((provider: unknown, index) => {
          const id = isMapping(provider) ? provider.okta_idp_id : undefined;
          if (typeof id !== 'string') return;
          const first = firstAt.get(id);
          if (first !== undefined) addProblem(ctx, [index], `: okta_idp_id is given twice (as in providers[${first}])`);
          else firstAt.set(id, index);
        });
      }, ALWAYS),
    );
}

const WAIT_MESSAGE = `must be an integer from 0 to ${MAX_FRESHNESS_WAIT_MS} (Okta waits 3 s for the whole answer)`;

/** The schema of the file named by TOKEN_TAP_HOOK_CONFIG; `env` holds the secret its header scheme names. */
function hookFileSchema(env: NodeJS.ProcessEnv) {
  const z = zod();
  const shape = {
    authentication: authenticationSchema(env).optional(),
    freshness_wait_ms: z.number({ error: WAIT_MESSAGE }).int(WAIT_MESSAGE).min(0, WAIT_MESSAGE).max(MAX_FRESHNESS_WAIT_MS, WAIT_MESSAGE).nullish(),
    providers: providersSchema(),
  };
  return strictMapping(shape, 'expected a mapping with authentication and providers').check(
    z.superRefine((root, ctx) => {
      if (isMapping(root) && root.authentication === undefined) addProblem(ctx, ['authentication'], `is missing: give ${AUTHENTICATION_FORMS}`);
    }, ALWAYS),
  );
}

type HookFile = z.output<ReturnType<typeof hookFileSchema>>;

/** The checked `authentication:` (exactly one scheme, its secret read) as the hook's authenticator takes it. */
function toAuthentication({ header, oauth }: NonNullable<HookFile['authentication']>): HookAuthentication {
  if (header) return { kind: 'header', name: (header.name ?? 'Authorization').toLowerCase(), value: (header.value_env ?? header.value_file)! };
  const { issuer, audience, scope, client_id: clientId, jwks_uri: jwksUri } = oauth!;
  return { kind: 'oauth', issuer, audience, scope, clientId, jwksUri: jwksUri ? new URL(jwksUri) : undefined };
}

/** Reads the file named by TOKEN_TAP_HOOK_CONFIG. Every problem joins `problems`; undefined when any. */
export function loadHookConfig(env: NodeJS.ProcessEnv, problems: string[]): HookConfig | undefined {
  const file = env[HOOK_CONFIG_ENV];
  if (!file) {
    problems.push(`the Okta hook listener is on but ${HOOK_CONFIG_ENV} is not set: name the hook's YAML file (see docs/okta-hook.md)`);
    return undefined;
  }
  const read = readYamlWithSchema(file, HOOK_CONFIG_ENV, hookFileSchema(env), problems);
  if (!read) return undefined;
  const providers = new Map<string, HookProvider>();
  for (const entry of read.providers) {
    providers.set(entry.okta_idp_id, {
      oktaIdpId: entry.okta_idp_id,
      idp: entry.idp,
      match: entry.match ?? { kind: 'email' },
      identityClaims: entry.identity_claims ?? new Map(),
      accessClaims: entry.access_claims ?? new Map(),
      idpClaim: entry.idp_claim ?? undefined,
      requireGrant: entry.require_grant ?? false,
      allowUnverified: entry.allow_unverified ?? false,
    });
  }
  return { authentication: toAuthentication(read.authentication!), providers, freshnessWaitMs: read.freshness_wait_ms ?? DEFAULT_FRESHNESS_WAIT_MS };
}
