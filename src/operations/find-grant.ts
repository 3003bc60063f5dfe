// From a user as Okta knows them to the grant captured for them at one upstream IdP: the one
// matching path of the Okta hook (hook/lookup.ts) and the token exchange (operations/exchange.ts).
// `match: email` weighs every active grant of the IdP carrying one of the user's addresses and
// takes only one whose id_token vouches for it (email_verified: true); `match: claim:<name>` takes
// the upstream subject from a claim of Okta's token (an admin maps idpuser.externalId into it).
// When the login that started the user's Okta session may still be on its way to Postgres, the
// caller may ask for a bounded wait for it.
import { comparableEmail, vouchedEmail } from '../capture/jwt.js';
import type { GrantMatch } from '../config/hook-file.js';
import type { GrantRecord, GrantStore } from '../store/grants.js';

/**
 * Candidates whose vouching is not recorded in Postgres (rows from before migration 000007, or
 * written by a sidecar of an earlier release during a rolling update) are opened and their claims
 * read, at most this many, newest first. Every other candidate is weighed in SQL, however many.
 * Such rows are no longer made once every sidecar runs a release with 000007.
 */
const MAX_UNCHECKED_CANDIDATES = 8;

/** Which grants of which IdP a user is matched to (a provider of the hook's or the exchange's file). */
export interface MatchRule {
  idp: string;
  match: GrantMatch;
  /** Grants whose id_token was not verified at capture count too. */
  allowUnverified: boolean;
}

/** The user, by what `match` reads: their addresses (lower-cased, distinct), or the upstream subject. */
export type UserKey = { email: string[] } | { subject: string };

/** What the capture pump says about captures not yet in Postgres (ingest/pump.ts's CapturePump). */
export interface InFlightCaptures {
  hasInFlight(idp: string): boolean;
  waitForIdp(idp: string, timeoutMs: number): Promise<boolean>;
}

export type GrantMatchResult =
  | { outcome: 'no_grant'; subject?: string; waitedMs: number }
  /** match: email, and grants of two or more upstream subjects vouch for the address: none is used. */
  | { outcome: 'ambiguous'; waitedMs: number }
  /** match: email, and the grant's id_token does not say `email_verified: true` for that address. */
  | { outcome: 'email_unverified'; grant: GrantRecord; waitedMs: number }
  | { outcome: 'unverified'; grant: GrantRecord; waitedMs: number }
  | { outcome: 'found'; grant: GrantRecord; waitedMs: number };

/** A wait for the login that started the user's Okta session, when it may still be in the spool. */
export interface Freshness {
  sessionCreatedAt: Date | undefined;
  waitMs: number;
  captures: InFlightCaptures;
}

/**
 * The user's addresses: the given values that are ASCII (comparableEmail: lower-cased without a
 * locale), distinct; undefined when there are none (a non-ASCII address matches nobody).
 */
export function emailKey(values: ReadonlyArray<string | undefined>): UserKey | undefined {
  const comparable = values.map((value) => (value ? comparableEmail(value) : undefined));
  const distinct = [...new Set(comparable.filter((value): value is string => value !== undefined))];
  return distinct.length > 0 ? { email: distinct } : undefined;
}

/** The upstream subject a claim carries; undefined when it carries none. */
export function claimKey(value: unknown): UserKey | undefined {
  return typeof value === 'string' && value !== '' ? { subject: value } : undefined;
}

type GrantReads = Pick<GrantStore, 'findGrant' | 'findEmailCandidates'>;

/** The grant `key` matches under `rule`, with why none is used when none is. */
export async function findMatchedGrant(store: GrantReads, rule: MatchRule, key: UserKey, freshness?: Freshness): Promise<GrantMatchResult> {
  let found = await read(store, rule, key);
  let waitedMs = 0;
  // The upstream login that began this session may still be in the spool: wait for this IdP's
  // captures enqueued so far (bounded), then answer with what is stored.
  const created = freshness?.sessionCreatedAt;
  const stale = found !== 'ambiguous' && (!found || (created !== undefined && found.capturedAt.getTime() < created.getTime()));
  if (freshness && stale && created !== undefined && freshness.captures.hasInFlight(rule.idp)) {
    const started = Date.now();
    await freshness.captures.waitForIdp(rule.idp, freshness.waitMs);
    waitedMs = Date.now() - started;
    found = await read(store, rule, key);
  }
  if (found === 'ambiguous') return { outcome: 'ambiguous', waitedMs };
  const grant = found;
  const subject = grant?.subject ?? ('subject' in key ? key.subject : undefined);
  if (grant?.status !== 'active') return { outcome: 'no_grant', ...(subject ? { subject } : {}), waitedMs };
  if (!grant.verified && !rule.allowUnverified) return { outcome: 'unverified', grant, waitedMs };
  if ('email' in key && !emailVerified(grant, key.email)) return { outcome: 'email_unverified', grant, waitedMs };
  return { outcome: 'found', grant, waitedMs };
}

async function read(store: GrantReads, rule: MatchRule, key: UserKey): Promise<GrantRecord | 'ambiguous' | undefined> {
  if ('subject' in key) return store.findGrant(rule.idp, key.subject);
  // Every active grant of this IdP whose email claim is one of the addresses (case-insensitive).
  // Anyone can set an email claim at some IdPs: only grants whose id_token says the IdP verified
  // that email count, and two upstream subjects with it mean "not sure", neither is used. (A
  // grant with an unverified email must not be able to shadow the real one, however many there
  // are: Postgres weighs every candidate.) Unverified grants are no candidates unless
  // allow_unverified. Without a vouched grant the newest candidate answers (email_unverified).
  const candidates = await store.findEmailCandidates(rule.idp, key.email, {
    verifiedOnly: !rule.allowUnverified,
    uncheckedLimit: MAX_UNCHECKED_CANDIDATES,
  });
  const vouched = [...candidates.vouched, ...candidates.unchecked.filter((grant) => emailVerified(grant, key.email))];
  if (vouched.length > 1) return 'ambiguous';
  return vouched[0] ?? candidates.newest;
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
