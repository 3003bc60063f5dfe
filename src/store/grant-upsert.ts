// The grant upsert: a capture's tokens sealed into a grants row, and rows merged into the stored
// grant per field in SQL, so no stored row is opened on the write path.
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import { seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { decodeIdTokenClaims, vouchedEmail } from '../capture/jwt.js';
import { erasedSql } from './tombstones.js';
import { fingerprintOrNull } from './capture-events.js';
import type { SealedExtras, TokenField } from './grant-reads.js';
import { chainBeganSql, lastUsedSql } from './policy-grants.js';

function secondsAfter(start: Date, seconds: number | undefined): Date | null {
  return seconds === undefined ? null : storableDate(start.getTime() + seconds * 1000);
}

function epochSeconds(value: unknown): Date | null {
  return typeof value === 'number' ? storableDate(value * 1000) : null;
}

/** Years 1 to 9999, or null: Postgres refuses an invalid Date (22007) or one past its range (22008), which would quarantine the capture. */
function storableDate(ms: number): Date | null {
  return ms >= -62_135_596_800_000 && ms <= 253_402_300_799_999 ? new Date(ms) : null;
}

/**
 * The stored logins of a batch in rounds: round k holds the k-th login of each grant, in batch
 * (spool) order. One upsert statement may touch a row only once, and each login must merge over
 * the one before it.
 */
export function loginRounds(captures: readonly Capture[]): Capture[][] {
  const rounds: Capture[][] = [];
  const seen = new Map<string, number>();
  for (const capture of captures) {
    if (capture.outcome !== 'stored') continue;
    const key = JSON.stringify([capture.idp, capture.subject]);
    const round = seen.get(key) ?? 0;
    seen.set(key, round + 1);
    (rounds[round] ??= []).push(capture);
  }
  return rounds;
}

/**
 * Stores a login's tokens, merged by capture time as every capture is, inside the caller's
 * transaction. True when nothing was stored because the user was erased after the capture was observed.
 */
export async function upsertGrant(client: pg.PoolClient, ring: KeyRing, capture: Capture): Promise<boolean> {
  return (await upsertGrantRows(client, [grantRow(ring, capture)])) > 0;
}

/** The grants row for a capture, sealed under the active key; NULL where the capture lacks a field. */
export function grantRow(ring: KeyRing, capture: Capture): unknown[] {
  const tokens = capture.tokens!;
  const subject = capture.subject!;
  const binding = (field: TokenField): FieldBinding => ({ idp: capture.idp, subject, field });
  const sealOrNull = (value: string | null | undefined, field: TokenField): Buffer | null => (value ? seal(ring, value, binding(field)) : null);
  const extras: SealedExtras = { response: tokens.extras };
  const observedAt = capture.observedAt;
  // Read from the id_token itself, as the hook reads the stored one; without one, no address.
  const vouched = tokens.idToken ? (vouchedEmail(decodeIdTokenClaims(tokens.idToken)) ?? '') : '';
  return [
    capture.idp,
    subject,
    capture.issuer ?? null,
    capture.clientId ?? null,
    capture.email ?? null,
    // Scopes never contain spaces (they are split on them), so one string per row carries them.
    tokens.scope.join(' '),
    tokens.tokenType ?? null,
    ring.activeKeyId,
    sealOrNull(tokens.accessToken, 'access_token'),
    sealOrNull(tokens.refreshToken, 'refresh_token'),
    sealOrNull(tokens.idToken, 'id_token'),
    seal(ring, JSON.stringify(extras), binding('extras')),
    fingerprintOrNull(ring, tokens.accessToken),
    secondsAfter(observedAt, tokens.expiresIn),
    tokens.refreshToken ? secondsAfter(observedAt, tokens.refreshExpiresIn) : null,
    tokens.idToken ? epochSeconds(tokens.claims?.exp) : null,
    observedAt,
    capture.verified === true,
    vouched,
    // A refresh's answer: its `verified` is a claim the stored grant must back (upsertGrantRows).
    capture.obtainedByRefresh === true,
    // The refresh-token facts (migration 000013): whether a refresh answer rotated, and whether it was a use.
    fingerprintOrNull(ring, tokens.refreshToken),
    capture.refreshedByPolicy === true,
  ];
}

// The refresh-token facts of migration 000013 for a new row. EXCLUDED carries what kind of write it
// is to the update below: last_refreshed_at is set only by a refresh answer, chain_began_at only by a
// login with a refresh token, last_used_at by anything but the policy's own rotation.
const REFRESH_FACT_COLUMNS = 'refresh_token_fp, refresh_token_first_seen_at, chain_began_at, last_refreshed_at, last_login_at, last_used_at';
const REFRESH_FACT_VALUES = `CASE WHEN refresh_token IS NULL THEN NULL ELSE refresh_token_fp END, CASE WHEN refresh_token IS NULL THEN NULL ELSE captured_at END,
            CASE WHEN refresh_token IS NULL OR by_refresh THEN NULL ELSE captured_at END, CASE WHEN by_refresh THEN captured_at END,
            CASE WHEN by_refresh THEN NULL ELSE captured_at END, CASE WHEN by_policy THEN NULL ELSE captured_at END`;

/**
 * The refresh-token facts of a stored row, given `newToken` (the write replaces its refresh token). A
 * refresh token counts as another one when its fingerprint differs (an IdP that does not rotate hands
 * the same one back); without a stored fingerprint (rows from before 000013) a rotation cannot be told.
 * The chain's start and the last use are written as the policy counted them before this write (its
 * fallbacks, store/policy-grants.ts): for a row from before 000013, or one written by an earlier
 * release, those fall back to capture times that this very write moves forward, so without freezing
 * them every policy rotation would reset max_age and idle_max.
 */
function refreshFactUpdates(newToken: string): string {
  const known = 'grants.refresh_token IS NOT NULL AND grants.refresh_token_fp IS NOT NULL';
  const another = `(${newToken} AND NOT (${known} AND EXCLUDED.refresh_token_fp IS NOT DISTINCT FROM grants.refresh_token_fp))`;
  // A refresh answer newer than the last one written: the spooled copy of an answer already written
  // (the outbox, replayed by the pump) is no second answer handing the same token back.
  const byRefresh = "COALESCE(EXCLUDED.last_refreshed_at > COALESCE(grants.last_refreshed_at, '-infinity'), false)";
  return `refresh_token_fp = CASE WHEN ${newToken} THEN EXCLUDED.refresh_token_fp ELSE grants.refresh_token_fp END,
       refresh_token_first_seen_at = CASE WHEN ${another} THEN EXCLUDED.captured_at ELSE grants.refresh_token_first_seen_at END,
       chain_began_at = CASE WHEN ${another} AND EXCLUDED.chain_began_at IS NOT NULL THEN EXCLUDED.chain_began_at
                             WHEN grants.refresh_token IS NULL THEN grants.chain_began_at ELSE ${chainBeganSql('grants.')} END,
       last_refreshed_at = GREATEST(grants.last_refreshed_at, EXCLUDED.last_refreshed_at),
       last_login_at = GREATEST(grants.last_login_at, EXCLUDED.last_login_at),
       last_used_at = GREATEST(${lastUsedSql('grants.')}, EXCLUDED.last_used_at),
       rotations_seen = grants.rotations_seen + CASE WHEN ${byRefresh} AND ${another} AND ${known} THEN 1 ELSE 0 END,
       refresh_rotates = CASE WHEN NOT (${byRefresh}) THEN grants.refresh_rotates WHEN EXCLUDED.refresh_token IS NULL THEN false
                              WHEN ${known} THEN EXCLUDED.refresh_token_fp IS DISTINCT FROM grants.refresh_token_fp ELSE grants.refresh_rotates END`;
}

/**
 * Upserts grant rows in one statement; at most one row per (idp, subject). Each token is kept
 * per field, the newest one seen: the access token and the row's other fields follow the newest
 * login, while a refresh token or id_token is replaced only by one captured later than the one
 * stored (`*_observed_at`). So a login that lacks a field keeps the stored ciphertext and key id,
 * and one that arrives late (a replayed spool, a slower sidecar, a refresh answer applied from
 * the outbox) still fills in a refresh token nothing newer replaced. Merging needs no key: a
 * sidecar whose ring lacks the stored key (a key rollout) cannot lose it. Nothing captured before
 * a revocation touches the revoked grant (before what it saw, for the policy's expiry). Tokens the sidecar obtained itself (a refresh under the
 * row lock) always apply, whatever the clocks of the sidecar that captured the stored row said.
 * Nothing of a user erased at or after the capture's time is stored (store/tombstones.ts): returns
 * how many rows were dropped so. A refresh's answer (by_refresh, spooled or applied at once) is
 * verified only as far as the grant it refreshes is, read under the row lock the upsert holds: it
 * never makes an unverified grant verified, nor makes a new grant verified.
 */
export async function upsertGrantRows(client: pg.PoolClient, rows: unknown[][], options: { obtained?: boolean } = {}): Promise<number> {
  const columns: unknown[][] = Array.from({ length: 22 }, (_, index) => rows.map((row) => row[index]));
  // The refresh answer's own claim for the row being updated (EXCLUDED.verified is false for it: an insert is never verified).
  const refreshClaim = rows.some((row) => row[19] === true)
    ? '(SELECT claim.verified FROM input AS claim WHERE claim.by_refresh AND claim.idp = EXCLUDED.idp AND claim.subject = EXCLUDED.subject)'
    : 'NULL::boolean';
  // A revoked grant takes what was captured after the revocation: after what the policy's expiry saw
  // (revoked_through) for a login, after the revocation's commit (updated_at) otherwise. A refresh
  // answer (EXCLUDED.last_login_at NULL) was asked for before the revocation, never after it.
  const revokedBefore = `CASE WHEN grants.revoked_through IS NOT NULL AND EXCLUDED.last_login_at IS NOT NULL THEN grants.revoked_through < EXCLUDED.captured_at
                              ELSE grants.updated_at <= EXCLUDED.captured_at END`;
  const notRevokedSince = options.obtained ? 'true' : `(grants.status <> 'revoked' OR ${revokedBefore})`;
  const fresh = options.obtained ? 'true' : `(grants.captured_at <= EXCLUDED.captured_at AND ${notRevokedSince})`;
  const newer = (field: 'refresh_token' | 'id_token') =>
    options.obtained
      ? `(EXCLUDED.${field} IS NOT NULL)`
      : `(EXCLUDED.${field} IS NOT NULL AND ${notRevokedSince} AND (grants.${field} IS NULL OR COALESCE(grants.${field}_observed_at, grants.captured_at) <= EXCLUDED.captured_at))`;
  // Rows from before migration 000004 name one key id for every field.
  const storedKeyId = (field: 'refresh_token' | 'id_token') =>
    `COALESCE(grants.${field}_key_id, CASE WHEN grants.${field} IS NULL THEN NULL ELSE grants.key_id END)`;
  const storedObservedAt = (field: 'refresh_token' | 'id_token') =>
    `COALESCE(grants.${field}_observed_at, CASE WHEN grants.${field} IS NULL THEN NULL ELSE grants.captured_at END)`;
  const perField = (field: 'refresh_token' | 'id_token') => `
       ${field} = CASE WHEN ${newer(field)} THEN EXCLUDED.${field} ELSE grants.${field} END,
       ${field}_key_id = CASE WHEN ${newer(field)} THEN EXCLUDED.${field}_key_id ELSE ${storedKeyId(field)} END,
       ${field}_expires_at = CASE WHEN ${newer(field)} THEN EXCLUDED.${field}_expires_at ELSE grants.${field}_expires_at END,
       ${field}_observed_at = CASE WHEN ${newer(field)} THEN EXCLUDED.captured_at ELSE ${storedObservedAt(field)} END,`;
  const rowLevel = (field: string) => `${field} = CASE WHEN ${fresh} THEN EXCLUDED.${field} ELSE grants.${field} END`;
  const filled = (field: string) =>
    `${field} = CASE WHEN ${fresh} THEN COALESCE(EXCLUDED.${field}, grants.${field}) ELSE COALESCE(grants.${field}, EXCLUDED.${field}) END`;
  const erased = erasedSql('row.idp', 'row.subject', 'row.captured_at');
  const { rows: result } = await client.query<{ erased: number }>(
    `WITH input AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                            $9::bytea[], $10::bytea[], $11::bytea[], $12::bytea[], $13::text[],
                            $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::boolean[], $19::text[], $20::boolean[],
                            $21::text[], $22::boolean[])
         AS row(idp, subject, issuer, client_id, email, scope, token_type, key_id,
                access_token, refresh_token, id_token, extras, access_token_fp,
                access_token_expires_at, refresh_token_expires_at, id_token_expires_at, captured_at, verified, vouched_email, by_refresh,
                refresh_token_fp, by_policy)
     ), upserted AS (
     INSERT INTO grants (idp, subject, issuer, client_id, email, scope, token_type, key_id,
                         access_token, refresh_token, id_token, extras, access_token_fp,
                         access_token_expires_at, refresh_token_expires_at, id_token_expires_at,
                         status, captured_at, updated_at, version, refresh_token_key_id, id_token_key_id, verified,
                         refresh_token_observed_at, id_token_observed_at, vouched_email, vouched_email_checked_at,
                         ${REFRESH_FACT_COLUMNS})
     SELECT idp, subject, issuer, client_id, email, COALESCE(string_to_array(NULLIF(scope, ''), ' '), '{}'), token_type, key_id,
            access_token, refresh_token, id_token, extras, access_token_fp,
            access_token_expires_at, refresh_token_expires_at, id_token_expires_at,
            'active', captured_at, now(), 1,
            CASE WHEN refresh_token IS NULL THEN NULL ELSE key_id END, CASE WHEN id_token IS NULL THEN NULL ELSE key_id END, verified AND NOT by_refresh,
            CASE WHEN refresh_token IS NULL THEN NULL ELSE captured_at END, CASE WHEN id_token IS NULL THEN NULL ELSE captured_at END,
            vouched_email, CASE WHEN id_token IS NULL THEN NULL ELSE captured_at END,
            ${REFRESH_FACT_VALUES}
     FROM input AS row WHERE NOT ${erased}
     ON CONFLICT (idp, subject) DO UPDATE SET
       ${filled('issuer')}, ${filled('client_id')}, ${filled('email')},
       scope = CASE WHEN ${fresh} AND cardinality(EXCLUDED.scope) > 0 THEN EXCLUDED.scope ELSE grants.scope END,
       ${rowLevel('token_type')}, ${rowLevel('key_id')}, ${rowLevel('access_token')}, ${rowLevel('extras')},
       ${rowLevel('access_token_fp')}, ${rowLevel('access_token_expires_at')},${perField('refresh_token')}${perField('id_token')}
       -- A new id_token decides; without one, tokens from an unverified source (a profile-linked
       -- login) make the grant unverified. A refresh's answer keeps the grant's flag at most.
       verified = CASE
         WHEN ${refreshClaim} IS NOT NULL THEN grants.verified AND (${refreshClaim} OR NOT (${newer('id_token')} OR ${fresh}))
         WHEN ${newer('id_token')} THEN EXCLUDED.verified WHEN ${fresh} THEN grants.verified AND EXCLUDED.verified ELSE grants.verified END,
       -- What the id_token vouches for follows the id_token, stamped with its capture time
       -- (id_token_observed_at), so a replacement by a sidecar that does not know it shows.
       vouched_email = CASE WHEN ${newer('id_token')} THEN EXCLUDED.vouched_email ELSE grants.vouched_email END,
       vouched_email_checked_at = CASE WHEN ${newer('id_token')} THEN EXCLUDED.captured_at ELSE grants.vouched_email_checked_at END,
       ${refreshFactUpdates(newer('refresh_token'))},
       status = CASE WHEN ${fresh} THEN 'active' ELSE grants.status END,
       revoked_through = CASE WHEN ${fresh} THEN NULL ELSE grants.revoked_through END,
       -- Changed tokens: a policy action that failed on the old ones may succeed now.
       policy_failed_at = NULL,
       captured_at = GREATEST(grants.captured_at, EXCLUDED.captured_at),
       -- A refresh stamps the time of writing, not of its transaction's start: callers that
       -- arrived while the IdP answered compare their arrival with it.
       -- A late write that only fills in a refresh token or id_token is no new login: callers
       -- waiting to refresh compare their arrival with updated_at.
       updated_at = ${options.obtained ? 'clock_timestamp()' : `CASE WHEN ${fresh} THEN now() ELSE grants.updated_at END`},
       version = grants.version + 1
     WHERE ${fresh} OR ${newer('refresh_token')} OR ${newer('id_token')}
     )
     SELECT count(*)::int AS erased FROM input AS row WHERE ${erased}`,
    columns,
  );
  return result[0]!.erased;
}
