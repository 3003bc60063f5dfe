// The file named by TOKEN_TAP_EXCHANGE_CONFIG (YAML or JSON): which Okta authorization servers' tokens
// the token exchange takes as subject tokens, and how their user is matched to a grant per IdP.
// Checked against a schema (zod, the shared building blocks of yaml-schema.ts): every problem at once,
// each naming where and what is expected, never the value found.
//
//   subject_issuers:
//     - issuer: https://example.okta.com/oauth2/default
//       audiences: [api://default]          # access tokens: aud must be one of these
//       client_ids: [0oa1webappEXAMPLE]     # id_tokens: aud must be one of these (none: no id_token is taken)
//       # jwks_uri: ...                     # default: from the issuer's discovery document
//   providers:
//     - idp: entra
//       match: email                        # or claim:<name>, as in the Okta hook's file
//       allow_unverified: false
import type { z } from 'zod';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { type GrantMatch, grantMatchSchema } from './hook-file.js';
import { EXCHANGE_CONFIG } from './settings.js';
import { ALWAYS, addProblem, checkWithSchema, httpsUrl, readYamlWithSchema, strictMapping } from './yaml-schema.js';
import { zod } from './zod.js';

export const EXCHANGE_CONFIG_ENV = EXCHANGE_CONFIG.name;

export interface SubjectIssuer {
  /** Compared with the subject token's `iss` as written (Okta's has no trailing slash). */
  issuer: string;
  /** An access token's `aud` must be one of these. */
  audiences: readonly string[];
  /** An id_token's `aud` must be one of these; empty: no id_token of this issuer is taken. */
  clientIds: readonly string[];
  /** undefined: from the issuer's discovery document. */
  jwksUri: URL | undefined;
}

export interface ExchangeProvider {
  idp: string;
  /**
   * The Okta IdP id of this upstream IdP: the subject token must show the user's Okta session came
   * through it (its `idpClaim` equals this), or any Okta user whose email or claim matches, signed
   * in through any IdP, would get this IdP's grant.
   */
  oktaIdpId: string;
  /** The subject token's claim naming the Okta IdP: `idp` (Okta's id_tokens), or one the hook adds. */
  idpClaim: string;
  match: GrantMatch;
  allowUnverified: boolean;
}

export interface ExchangeConfig {
  subjectIssuers: readonly SubjectIssuer[];
  /** By token-tap IdP name: the IdPs an exchange may name as its audience. */
  providers: ReadonlyMap<string, ExchangeProvider>;
}

/** Okta's id_tokens carry the Okta IdP the session came through in this reserved claim. */
export const DEFAULT_IDP_CLAIM = 'idp';

const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$/;
const PRINTABLE = /^[\x21-\x7E]{1,200}$/;

/** A list of names (audiences, client ids); a message starting ": " reads "<path>: expected ...". */
function names(what: string) {
  const z = zod();
  return z.array(
    z
      .string({ error: `: expected ${what}: printable, no spaces, at most 200 characters` })
      .regex(PRINTABLE, `: expected ${what}: printable, no spaces, at most 200 characters`),
    {
      error: `: expected a list of ${what}s`,
    },
  );
}

function subjectIssuerSchema() {
  return strictMapping(
    {
      // Compared with `iss` as written (Okta's has no trailing slash); its discovery document is under it.
      issuer: httpsUrl({ noQuery: true }),
      audiences: names('an audience of the authorization server (e.g. api://default)').min(
        1,
        ': expected at least one audience (the aud of its access tokens)',
      ),
      client_ids: names('the client id of an Okta app (the aud of its id_tokens)').optional(),
      jwks_uri: httpsUrl().optional(),
    },
    'must be a mapping with issuer and audiences',
  );
}

const IDP_MESSAGE = `: expected the token-tap IdP name of the Envoy route (${IDP_NAME_RULE})`;

const OKTA_IDP_ID_MESSAGE = ": expected the Okta IdP id of this upstream IdP (e.g. 0oa1abcdEXAMPLE), as in the Okta hook's file";
const IDP_CLAIM_MESSAGE = ": expected the name of the subject token's claim carrying the Okta IdP id (idp, or the hook's idp_claim)";

function providerSchema() {
  const z = zod();
  return strictMapping(
    {
      idp: z.string({ error: IDP_MESSAGE }).refine(isIdpName, IDP_MESSAGE),
      okta_idp_id: z.string({ error: OKTA_IDP_ID_MESSAGE }).regex(/^[A-Za-z0-9]{1,64}$/, OKTA_IDP_ID_MESSAGE),
      idp_claim: z.string({ error: IDP_CLAIM_MESSAGE }).regex(CLAIM_NAME, IDP_CLAIM_MESSAGE).optional(),
      match: grantMatchSchema(': expected "email" or "claim:<name of the claim of Okta\'s token carrying the upstream subject>"').optional(),
      allow_unverified: z.boolean({ error: 'must be true or false' }).optional(),
    },
    'must be a mapping with idp, okta_idp_id and match',
  );
}

/**
 * A claim names the upstream subject at one IdP: shared, a subject an account of one IdP carries
 * would open the grant of the same subject at the other.
 */
function claimOncePerProvider() {
  const z = zod();
  return z.superRefine((items: unknown, ctx) => {
    if (!Array.isArray(items)) return;
    const claimAt = new Map<string, number>();
    items.forEach((item: unknown, index) => {
      const match = item !== null && typeof item === 'object' ? (item as Record<string, unknown>).match : undefined;
      const claim =
        typeof match === 'string' && match.startsWith('claim:')
          ? match
          : match !== null && typeof match === 'object' && (match as GrantMatch).kind === 'claim'
            ? `claim:${(match as { claim: string }).claim}`
            : undefined;
      if (claim === undefined) return;
      const first = claimAt.get(claim);
      if (first === undefined) claimAt.set(claim, index);
      else
        addProblem(
          ctx,
          [index, 'match'],
          `: the same claim as entry ${first}: each IdP needs a claim of its own carrying its upstream subject (e.g. entra_sub, google_sub)`,
        );
    });
  }, ALWAYS);
}

/** Each `key` once in `items`: a repeat is named by its positions, never by its value. */
function onceEach(key: string, what: string) {
  const z = zod();
  return z.superRefine((items: unknown, ctx) => {
    if (!Array.isArray(items)) return;
    const first = new Map<unknown, number>();
    items.forEach((item: unknown, index) => {
      const value = item !== null && typeof item === 'object' ? (item as Record<string, unknown>)[key] : undefined;
      if (typeof value !== 'string') return;
      if (first.has(value)) addProblem(ctx, [index], `: ${what} as entry ${first.get(value)} (each is given once)`);
      else first.set(value, index);
    });
  }, ALWAYS);
}

/** The schema of the file named by TOKEN_TAP_EXCHANGE_CONFIG (built when one is checked: config/zod.ts). */
function exchangeFileSchema() {
  const z = zod();
  return strictMapping(
    {
      subject_issuers: z
        .array(subjectIssuerSchema(), {
          error: (issue) =>
            issue.input === undefined
              ? 'is missing: list the Okta authorization servers whose tokens are accepted'
              : 'must be a list of Okta authorization servers',
        })
        .min(1, ': expected at least one Okta authorization server')
        .check(onceEach('issuer', 'the same issuer')),
      providers: z
        .array(providerSchema(), {
          error: (issue) => (issue.input === undefined ? 'is missing: list the IdPs the exchange answers for' : 'must be a list of providers'),
        })
        .min(1, ': expected at least one provider (an IdP the exchange answers for)')
        .check(onceEach('idp', 'the same idp'))
        .check(claimOncePerProvider()),
    },
    'expected a mapping with subject_issuers and providers',
  );
}

type ExchangeFile = z.output<ReturnType<typeof exchangeFileSchema>>;

function toConfig({ subject_issuers: issuers, providers }: ExchangeFile): ExchangeConfig {
  return {
    subjectIssuers: issuers.map((entry) => ({
      issuer: entry.issuer,
      audiences: entry.audiences,
      clientIds: entry.client_ids ?? [],
      jwksUri: entry.jwks_uri === undefined ? undefined : new URL(entry.jwks_uri),
    })),
    providers: new Map(
      providers.map((entry) => [
        entry.idp,
        {
          idp: entry.idp,
          oktaIdpId: entry.okta_idp_id,
          idpClaim: entry.idp_claim ?? DEFAULT_IDP_CLAIM,
          match: entry.match ?? { kind: 'email' },
          allowUnverified: entry.allow_unverified ?? false,
        },
      ]),
    ),
  };
}

/** The exchange's settings from a parsed file; every problem joins `problems` (undefined when any). */
export function readExchangeConfig(root: unknown, file: string, problems: string[]): ExchangeConfig | undefined {
  const checked = checkWithSchema(root, file, exchangeFileSchema(), problems);
  return checked ? toConfig(checked) : undefined;
}

/** Reads the file named by TOKEN_TAP_EXCHANGE_CONFIG. Every problem joins `problems`; undefined when any. */
export function loadExchangeConfig(env: NodeJS.ProcessEnv, problems: string[]): ExchangeConfig | undefined {
  const file = env[EXCHANGE_CONFIG_ENV];
  if (!file) {
    problems.push(`the token exchange listener is on but ${EXCHANGE_CONFIG_ENV} is not set: name the exchange's YAML file (see docs/token-exchange.md)`);
    return undefined;
  }
  const checked = readYamlWithSchema(file, EXCHANGE_CONFIG_ENV, exchangeFileSchema(), problems);
  return checked ? toConfig(checked) : undefined;
}
