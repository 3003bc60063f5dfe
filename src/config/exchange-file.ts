// The file named by TOKEN_TAP_EXCHANGE_CONFIG (YAML or JSON): which Okta authorization servers' tokens
// the token exchange takes as subject tokens, and how their user is matched to a grant per IdP.
// Checked against a schema (zod): every problem at once, each naming where and what is expected,
// never the value found.
//
//   subject_issuers:
//     - issuer: https://example.okta.com/oauth2/default
//       audiences: [api://default]          # access tokens: aud must be one of these
//       client_ids: [0oa1webappEXAMPLE]     # id_tokens: aud must be one of these (none: no id_token is taken)
//       # jwks_uri: ...                     # default: from the issuer's discovery document
//   providers:
//     - idp: entra
//       okta_idp_id: 0oa1entraEXAMPLE       # the Okta IdP the user's Okta session must have come through
//       idp_claim: upstream_idp             # the subject token's claim naming it (default idp: Okta id_tokens')
//       match: email                        # or claim:<name>, as in the Okta hook's file
//       allow_unverified: false
import { z } from 'zod';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { isHttpsOrLoopbackUrl } from '../lib/loopback-url.js';
import type { GrantMatch } from './hook-file.js';
import { readYamlFile } from './values.js';

export const EXCHANGE_CONFIG_ENV = 'TOKEN_TAP_EXCHANGE_CONFIG';

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

const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$/;
const PRINTABLE = /^[\x21-\x7E]{1,200}$/;

function isAllowedUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return isHttpsOrLoopbackUrl(url);
  } catch {
    return false;
  }
}

const url = (what: string) => z.string().refine(isAllowedUrl, { error: `expected the https URL of ${what} (plain http only for 127.0.0.1/localhost)` });
const names = (what: string) => z.array(z.string().regex(PRINTABLE, { error: `expected ${what}: printable, no spaces, at most 200 characters` }));

const subjectIssuer = z.strictObject({
  issuer: url("the Okta authorization server (its tokens' iss)"),
  audiences: names("an audience of the authorization server (e.g. api://default)").min(1, { error: 'expected at least one audience (the aud of its access tokens)' }),
  client_ids: names('the client id of an Okta app (the aud of its id_tokens)').optional(),
  jwks_uri: url('its key set').optional(),
});

const match = z
  .string({ error: 'expected "email" or "claim:<name of the claim of Okta\'s token carrying the upstream subject>"' })
  .refine((text) => text === 'email' || CLAIM_NAME.test(/^claim:(.*)$/.exec(text)?.[1] ?? ''), {
    error: 'expected "email" or "claim:<name of the claim of Okta\'s token carrying the upstream subject>"',
  });

/** Okta's id_tokens carry the Okta IdP the session came through in this reserved claim. */
export const DEFAULT_IDP_CLAIM = 'idp';

const provider = z.strictObject({
  idp: z.string().refine(isIdpName, { error: `expected the token-tap IdP name of the Envoy route (${IDP_NAME_RULE})` }),
  okta_idp_id: z.string({ error: 'expected the Okta IdP id of this upstream IdP (e.g. 0oa1abcdEXAMPLE), as in the Okta hook\'s file' })
    .regex(/^[A-Za-z0-9]{1,64}$/, { error: 'expected the Okta IdP id of this upstream IdP (e.g. 0oa1abcdEXAMPLE), as in the Okta hook\'s file' }),
  idp_claim: z.string().regex(CLAIM_NAME, { error: "expected the name of the subject token's claim carrying the Okta IdP id (idp, or the hook's idp_claim)" }).optional(),
  match: match.optional(),
  allow_unverified: z.boolean().optional(),
});

const exchangeFile = z
  .strictObject({
    subject_issuers: z.array(subjectIssuer).min(1, { error: 'expected at least one Okta authorization server' }),
    providers: z.array(provider).min(1, { error: 'expected at least one provider (an IdP the exchange answers for)' }),
  })
  .superRefine((file, context) => {
    const seen = <T>(items: readonly T[], key: (item: T) => string, path: string, what: string) => {
      const first = new Map<string, number>();
      items.forEach((item, index) => {
        if (first.has(key(item))) context.addIssue({ code: 'custom', path: [path, index], message: `${what} as entry ${first.get(key(item))} (each is given once)` });
        else first.set(key(item), index);
      });
    };
    seen(file.subject_issuers, (entry) => entry.issuer, 'subject_issuers', 'the same issuer');
    seen(file.providers, (entry) => entry.idp, 'providers', 'the same idp');
    // A claim names the upstream subject at one IdP: shared, a subject an account of one IdP carries
    // would open the grant of the same subject at the other.
    const claimOf = (entry: (typeof file.providers)[number]) => (entry.match?.startsWith('claim:') ? entry.match : undefined);
    const claimAt = new Map<string, number>();
    file.providers.forEach((entry, index) => {
      const claim = claimOf(entry);
      if (claim === undefined) return;
      const first = claimAt.get(claim);
      if (first === undefined) claimAt.set(claim, index);
      else context.addIssue({ code: 'custom', path: ['providers', index, 'match'], message: `the same claim as entry ${first}: each IdP needs a claim of its own carrying its upstream subject (e.g. entra_sub, google_sub)` });
    });
  });

/** `subject_issuers[0].issuer` from zod's path. */
function describePath(path: ReadonlyArray<PropertyKey>): string {
  return path.map((part, index) => (typeof part === 'number' ? `[${part}]` : `${index === 0 ? '' : '.'}${String(part)}`)).join('');
}

/** Each issue as "<file>: <path>: <what is expected>"; zod's messages name types and options, never the value. */
export function schemaProblems(file: string, issues: ReadonlyArray<z.core.$ZodIssue>): string[] {
  return issues.map((issue) => `${file}: ${issue.path.length > 0 ? `${describePath(issue.path)}: ` : ''}${issue.message}`);
}

function toMatch(text: string | undefined): GrantMatch {
  return text === undefined || text === 'email' ? { kind: 'email' } : { kind: 'claim', claim: text.slice('claim:'.length) };
}

/** The exchange's settings from a parsed file; every problem joins `problems` (undefined when any). */
export function readExchangeConfig(root: unknown, file: string, problems: string[]): ExchangeConfig | undefined {
  const parsed = exchangeFile.safeParse(root);
  if (!parsed.success) {
    problems.push(...schemaProblems(file, parsed.error.issues));
    return undefined;
  }
  const { subject_issuers: issuers, providers } = parsed.data;
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
        { idp: entry.idp, oktaIdpId: entry.okta_idp_id, idpClaim: entry.idp_claim ?? DEFAULT_IDP_CLAIM, match: toMatch(entry.match), allowUnverified: entry.allow_unverified ?? false },
      ]),
    ),
  };
}

/** Reads the file named by TOKEN_TAP_EXCHANGE_CONFIG. Every problem joins `problems`; undefined when any. */
export function loadExchangeConfig(env: NodeJS.ProcessEnv, problems: string[]): ExchangeConfig | undefined {
  const file = env[EXCHANGE_CONFIG_ENV];
  if (!file) {
    problems.push(`the token exchange listener is on but ${EXCHANGE_CONFIG_ENV} is not set: name the exchange's YAML file (see docs/token-exchange.md)`);
    return undefined;
  }
  const read = readYamlFile(file, EXCHANGE_CONFIG_ENV, problems);
  return read ? readExchangeConfig(read.root, file, problems) : undefined;
}
