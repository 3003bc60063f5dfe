// Reading grants: a row opened with the key ring, one grant by its user, and the candidates of the
// Okta hook's `match: email`.
import type pg from 'pg';
import { open, parseDecrypted, type KeyRing } from '../keys/key-ring.js';
import { decodeIdTokenClaims } from '../capture/jwt.js';

export interface GrantRecord {
  idp: string;
  subject: string;
  issuer: string | null;
  clientId: string | null;
  email: string | null;
  scope: string[];
  tokenType: string | null;
  keyId: string;
  accessToken: string | null;
  refreshToken: string | null;
  idToken: string | null;
  /** Response fields beyond the standard ones. */
  extras: Record<string, unknown>;
  /** Decoded id_token claims of the latest id_token. */
  claims: Record<string, unknown> | null;
  accessTokenExpiresAt: Date | null;
  refreshTokenExpiresAt: Date | null;
  idTokenExpiresAt: Date | null;
  status: 'active' | 'revoked';
  /** The id_token was verified (signature, pinned issuer, audience) before it was stored. */
  verified: boolean;
  capturedAt: Date;
  updatedAt: Date;
  /** The last refresh answer written (migration 000013); null when none was, or on older rows. */
  lastRefreshedAt: Date | null;
  version: number;
}

export interface GrantRow {
  idp: string;
  subject: string;
  issuer: string | null;
  client_id: string | null;
  email: string | null;
  scope: string[];
  token_type: string | null;
  key_id: string;
  access_token: Buffer | null;
  refresh_token: Buffer | null;
  id_token: Buffer | null;
  extras: Buffer | null;
  access_token_expires_at: Date | null;
  refresh_token_expires_at: Date | null;
  id_token_expires_at: Date | null;
  status: 'active' | 'revoked';
  verified: boolean;
  captured_at: Date;
  updated_at: Date;
  version: number;
  refresh_token_key_id: string | null;
  id_token_key_id: string | null;
  refresh_token_observed_at: Date | null;
  /** Migration 000007: the address the stored id_token vouches for ('' none), NULL when not known. */
  vouched_email?: string | null;
  vouched_email_checked_at?: Date | null;
  /** Migration 000013: the refresh-token facts (store/grant-upsert.ts); NULL on older rows. */
  refresh_token_first_seen_at?: Date | null;
  chain_began_at?: Date | null;
  last_refreshed_at?: Date | null;
  last_used_at?: Date | null;
  rotations_seen?: number;
  refresh_rotates?: boolean | null;
}

/** The columns decryptGrant opens a grant from: what a read needs, and nothing it does not parse for nothing. */
export type OpenableGrantRow = Pick<
  GrantRow,
  | 'idp'
  | 'subject'
  | 'issuer'
  | 'client_id'
  | 'email'
  | 'scope'
  | 'token_type'
  | 'key_id'
  | 'access_token'
  | 'refresh_token'
  | 'id_token'
  | 'extras'
  | 'access_token_expires_at'
  | 'refresh_token_expires_at'
  | 'id_token_expires_at'
  | 'status'
  | 'verified'
  | 'captured_at'
  | 'updated_at'
  | 'version'
  | 'refresh_token_key_id'
  | 'id_token_key_id'
  | 'last_refreshed_at'
>;

/**
 * OpenableGrantRow's columns as SQL, for reads that only open a grant (`g.` for a join's alias):
 * `SELECT *` has a dozen more (refresh-token facts, vouching), each a field pg builds and, for the
 * seven timestamps among them, a date it parses on every read (bench/RESULTS.md, issue 25).
 */
export function grantReadColumns(alias = ''): string {
  return Object.keys(OPENED_COLUMNS)
    .map((column) => `${alias}${column}`)
    .join(', ');
}

// Every column of OpenableGrantRow, and no other: the compiler holds this list to the type.
const OPENED_COLUMNS: Record<keyof OpenableGrantRow, true> = {
  idp: true,
  subject: true,
  issuer: true,
  client_id: true,
  email: true,
  scope: true,
  token_type: true,
  key_id: true,
  access_token: true,
  refresh_token: true,
  id_token: true,
  extras: true,
  access_token_expires_at: true,
  refresh_token_expires_at: true,
  id_token_expires_at: true,
  status: true,
  verified: true,
  captured_at: true,
  updated_at: true,
  version: true,
  refresh_token_key_id: true,
  id_token_key_id: true,
  last_refreshed_at: true,
};

const FIND_GRANT = `SELECT ${grantReadColumns()} FROM grants WHERE idp = $1 AND subject = $2`;

/** The grants `match: email` weighs for some addresses (findEmailCandidates). */
export interface EmailCandidates {
  /** Candidates whose stored id_token vouches for one of the addresses, newest first; at most two. */
  vouched: GrantRecord[];
  /**
   * Candidates for which that is not recorded (written before migration 000007, or by a sidecar of
   * an earlier release during a rolling update), newest first, at most `uncheckedLimit`: the caller
   * reads their claims.
   */
  unchecked: GrantRecord[];
  /** The newest candidate of all, vouched or not. */
  newest: GrantRecord | undefined;
}

/** The sealed fields of a grants row; each is bound to its row and field. */
export type TokenField = 'access_token' | 'refresh_token' | 'id_token' | 'extras';

/** Response fields beyond the standard ones. Rows written before 000004 also carry `claims` here. */
export interface SealedExtras {
  response: Record<string, unknown>;
}

/** `openWhenRead`: each sealed field is opened when first read (decryptGrantWhenRead), not all at once. */
export async function findGrant(
  pool: pg.Pool,
  ring: KeyRing,
  idp: string,
  subject: string,
  options: { openWhenRead?: boolean } = {},
): Promise<GrantRecord | undefined> {
  // Named, so each connection parses and plans it once: the token exchange's read, and the CLI's.
  const { rows } = await pool.query<OpenableGrantRow>({ name: 'token-tap-find-grant', text: FIND_GRANT, values: [idp, subject] });
  if (!rows[0]) return undefined;
  return options.openWhenRead ? decryptGrantWhenRead(ring, rows[0]) : decryptGrant(ring, rows[0]);
}

/**
 * The candidates of the Okta hook's `match: email`: active grants of an IdP whose email is one of
 * `emails` (ASCII, lower-case); with `verifiedOnly`, only grants whose id_token was verified. Only
 * a grant whose email is printable ASCII counts (`[!-~]`): Postgres' lower() folds the Kelvin
 * sign to `k` too, and vouched_email of rows written before ASCII-only matching may hold the fold. Postgres
 * weighs every candidate, however many there are (anyone may claim an address at some IdPs, so
 * look-alikes must not push the real user out): it returns the newest two whose id_token vouches
 * for one of the addresses (vouched_email), those whose vouching is not recorded, bounded, and the
 * newest candidate. One query; only those rows are opened.
 */
export async function findEmailCandidates(
  pool: pg.Pool,
  ring: KeyRing,
  idp: string,
  emails: readonly string[],
  options: { verifiedOnly: boolean; uncheckedLimit: number },
): Promise<EmailCandidates> {
  const { rows } = await pool.query<GrantRow & { candidate: 'vouched' | 'unchecked' | 'newest' }>(
    `WITH candidates AS MATERIALIZED (
       SELECT subject, updated_at, vouched_email,
              (vouched_email IS NOT NULL AND vouched_email_checked_at IS NOT DISTINCT FROM id_token_observed_at) AS recorded
       FROM grants WHERE idp = $1 AND lower(email) = ANY($2::text[]) AND email ~ '^[!-~]+$' AND status = 'active' AND (verified OR NOT $3)
     ), chosen AS (
       (SELECT 'vouched' AS candidate, subject FROM candidates WHERE recorded AND vouched_email = ANY($2::text[]) ORDER BY updated_at DESC LIMIT 2)
       UNION ALL
       (SELECT 'unchecked', subject FROM candidates WHERE NOT recorded ORDER BY updated_at DESC LIMIT $4)
       UNION ALL
       (SELECT 'newest', subject FROM candidates ORDER BY updated_at DESC LIMIT 1)
     )
     SELECT chosen.candidate, g.* FROM chosen JOIN grants g ON g.idp = $1 AND g.subject = chosen.subject
     ORDER BY g.updated_at DESC`,
    [idp, emails, options.verifiedOnly, options.uncheckedLimit],
  );
  // The newest candidate is usually among the others too: open each row once.
  const opened = new Map<string, GrantRecord>();
  const openOnce = (row: GrantRow) => opened.get(row.subject) ?? opened.set(row.subject, decryptGrant(ring, row)).get(row.subject)!;
  const of = (candidate: string) => rows.filter((row) => row.candidate === candidate).map(openOnce);
  return { vouched: of('vouched'), unchecked: of('unchecked'), newest: of('newest')[0] };
}

/** Opens a grants row: each field under the key that sealed it, bound to its row and field. */
export function decryptGrant(ring: KeyRing, row: OpenableGrantRow): GrantRecord {
  const sealed = sealedFields(ring, row);
  const extras = sealed.extras();
  const idToken = sealed.idToken();
  return {
    ...plainFields(row),
    accessToken: sealed.accessToken(),
    refreshToken: sealed.refreshToken(),
    idToken,
    extras,
    claims: claimsOf(idToken),
  };
}

/**
 * A grants row whose sealed fields are each opened (and the id_token's claims decoded) when first
 * read, for a caller that serves one of them: the token exchange answers one token, and opening
 * the other three was most of its AES-GCM and key-ring CPU (bench/RESULTS.md, issue 25). What is
 * read is opened and authenticated as by decryptGrant; a field that cannot be opened throws its
 * DecryptError where it is read, so only a caller that handles errors there uses this.
 */
export function decryptGrantWhenRead(ring: KeyRing, row: OpenableGrantRow): GrantRecord {
  const sealed = sealedFields(ring, row);
  const record = plainFields(row) as GrantRecord;
  const whenRead = <K extends keyof GrantRecord>(name: K, read: () => GrantRecord[K]) =>
    Object.defineProperty(record, name, {
      enumerable: true,
      configurable: true,
      get() {
        const value = read();
        Object.defineProperty(record, name, { value, enumerable: true, writable: true, configurable: true });
        return value;
      },
    });
  whenRead('accessToken', sealed.accessToken);
  whenRead('refreshToken', sealed.refreshToken);
  whenRead('idToken', sealed.idToken);
  whenRead('extras', sealed.extras);
  whenRead('claims', () => claimsOf(record.idToken));
  return record;
}

function claimsOf(idToken: string | null): Record<string, unknown> | null {
  return idToken ? (decodeIdTokenClaims(idToken) ?? null) : null;
}

/** The sealed fields, each opened when called. Rows from before per-field key ids (migration 000004) name one key for every field. */
function sealedFields(ring: KeyRing, row: OpenableGrantRow) {
  const openOrNull = (value: Buffer | null, field: TokenField, keyId?: string | null): string | null =>
    value ? open(ring, keyId ?? row.key_id, value, { idp: row.idp, subject: row.subject, field }) : null;
  return {
    accessToken: () => openOrNull(row.access_token, 'access_token'),
    refreshToken: () => openOrNull(row.refresh_token, 'refresh_token', row.refresh_token_key_id),
    idToken: () => openOrNull(row.id_token, 'id_token', row.id_token_key_id),
    extras: () => parseDecrypted<SealedExtras>(openOrNull(row.extras, 'extras') ?? '{"response":{}}', `extras of grant (${row.idp}, ${row.subject})`).response,
  };
}

/** What a grant says in the clear. */
function plainFields(row: OpenableGrantRow): Omit<GrantRecord, 'accessToken' | 'refreshToken' | 'idToken' | 'extras' | 'claims'> {
  return {
    idp: row.idp,
    subject: row.subject,
    issuer: row.issuer,
    clientId: row.client_id,
    email: row.email,
    scope: row.scope,
    tokenType: row.token_type,
    keyId: row.key_id,
    accessTokenExpiresAt: row.access_token_expires_at,
    refreshTokenExpiresAt: row.refresh_token_expires_at,
    idTokenExpiresAt: row.id_token_expires_at,
    status: row.status,
    verified: row.verified,
    capturedAt: row.captured_at,
    updatedAt: row.updated_at,
    lastRefreshedAt: row.last_refreshed_at ?? null,
    version: row.version,
  };
}
