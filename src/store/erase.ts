// Deleting everything stored about a user (privacy requests): their grants, the capture events
// that name them, profile hints and their quarantined captures. access_events rows stay: they
// record who did what, this deletion included. A tombstone, written in the same transaction as the
// grants' deletion, makes the capture writer drop any capture of the user observed before now that
// is still on its way (store/tombstones.ts).
//
// Two steps. First the bulk of it, the user's capture events (a row per login), in a transaction of
// its own that holds off no capture batch. Then the erasure proper holds capture batches off
// (EXCLUSIVE on tombstones) only for what must be atomic with the tombstone: the grants, what
// batches wrote since the first step (events, hints, quarantined captures), the tombstone. Every
// statement probes an index by (idp, subject): an erasure at every IdP first names the IdPs (a loose
// index scan over grants and capture_events, one probe per IdP), never scans capture_events by
// subject (a sequential scan of every login, while every capture batch waits).
import type pg from 'pg';
import { subjectFingerprintCandidates, type KeyRing } from '../keys/key-ring.js';
import { withTransaction } from './pool.js';
import { errorCode } from '../lib/error-description.js';
import { VaultError } from './errors.js';
import { EVERY_IDP, HOLD_OFF_CAPTURE_WRITES, writeTombstones } from './tombstones.js';

/** How long an erasure waits for the capture batches in flight (each holds off erasures while it runs) or a grant's row lock. */
const ERASE_LOCK_TIMEOUT_MS = 5_000;
const LOCK_NOT_AVAILABLE = '55P03';
const LOCK_TIMEOUT = `SET LOCAL lock_timeout = ${ERASE_LOCK_TIMEOUT_MS}`;

export interface EraseRequest {
  /** Only these IdPs; undefined: every IdP. */
  idps: readonly string[] | undefined;
  subject?: string;
  /** Matches the email claim case-insensitively. */
  email?: string;
  /**
   * The key ring: its fingerprint key finds the user's quarantined captures (subject_fp). Without
   * it the erasure refuses while the quarantine holds captures of those IdPs that name a user.
   */
  ring?: KeyRing;
}

export interface EraseResult {
  deleted: Array<{ idp: string; subject: string }>;
  captureEventsDeleted: number;
  quarantinedCapturesDeleted: number;
}

type Pair = { idp: string; subject: string };
/** Whose rows a statement deletes: a subject at some IdPs, or the (idp, subject) pairs found by email. */
type Target = { idps: string[]; subject: string } | { pairs: Pair[] };

/**
 * The IdPs that have grants or capture events: a loose index scan of each table (the next IdP after
 * the last one, by index), so one probe per IdP, whatever the number of rows.
 */
async function knownIdps(client: pg.Pool | pg.PoolClient): Promise<string[]> {
  const distinct = (table: string) =>
    `SELECT min(idp) FROM ${table} UNION ALL SELECT (SELECT min(idp) FROM ${table} WHERE idp > seen.idp) FROM seen_in_${table} AS seen WHERE seen.idp IS NOT NULL`;
  const { rows } = await client.query<{ idp: string }>(
    `WITH RECURSIVE seen_in_grants(idp) AS (${distinct('grants')}), seen_in_capture_events(idp) AS (${distinct('capture_events')})
     SELECT idp FROM seen_in_grants WHERE idp IS NOT NULL UNION SELECT idp FROM seen_in_capture_events WHERE idp IS NOT NULL`,
  );
  return rows.map((row) => row.idp);
}

/** A condition on (idp, subject) that the (idp, subject, ...) indexes answer, and its parameters. */
function byUser(target: Target): { where: string; params: unknown[] } {
  if ('pairs' in target) {
    return {
      where: `(idp, subject) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      params: [target.pairs.map((pair) => pair.idp), target.pairs.map((pair) => pair.subject)],
    };
  }
  return { where: 'idp = ANY($1::text[]) AND subject = $2', params: [target.idps, target.subject] };
}

/** Deletes the capture events and profile hints of `target` (hints at every IdP: `everyIdp`); returns how many events. */
async function deleteEventsAndHints(client: pg.PoolClient, target: Target, everyIdp: boolean): Promise<number> {
  const { where, params } = byUser(target);
  const events = await client.query(`DELETE FROM capture_events WHERE ${where}`, params);
  // Hints live ten minutes (store/pending-grants.ts), so the table is small: by subject alone, none is missed at an IdP with no events left.
  if (everyIdp && 'subject' in target) await client.query('DELETE FROM subject_hints WHERE subject = $1', [target.subject]);
  else await client.query(`DELETE FROM subject_hints WHERE ${where}`, params);
  return events.rowCount ?? 0;
}

/** Grants matching the request at `idps` (by subject or email claim), deleted or only listed. */
async function grantsOf(client: pg.PoolClient | pg.Pool, idps: string[], request: EraseRequest, how: 'SELECT' | 'DELETE', where = ''): Promise<Pair[]> {
  const { rows } = await client.query<Pair>(
    `${how === 'DELETE' ? 'DELETE FROM grants' : 'SELECT idp, subject FROM grants'} WHERE idp = ANY($1::text[])
       AND ($2::text IS NULL OR subject = $2) AND ($3::text IS NULL OR lower(email) = lower($3)) ${where}
     ${how === 'DELETE' ? 'RETURNING idp, subject' : ''}`,
    [idps, request.subject ?? null, request.email ?? null],
  );
  return rows;
}

/**
 * Without the key ring nothing can tell whose a quarantined capture is: refused while the quarantine
 * holds captures of these IdPs (undefined: any) that name a user, before anything is deleted.
 */
async function refuseWithoutRing(pool: pg.Pool, idps: readonly string[] | undefined): Promise<void> {
  const { rows } = await pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM quarantined_captures WHERE subject_fp IS NOT NULL AND ($1::text[] IS NULL OR idp = ANY($1::text[]))',
    [idps ?? null],
  );
  if (rows[0]!.n === 0) return;
  throw new VaultError(
    `the quarantine holds ${rows[0]!.n} captures of ${idps ? 'this IdP' : 'these IdPs'}, and without the key ring the erasure cannot tell which are this user's: set TOKEN_TAP_KEYS (and TOKEN_TAP_FINGERPRINT_KEY) as the sidecar has them; nothing was deleted`,
    'failed_precondition',
  );
}

/** Deletes the quarantined captures of the user (at every IdP: `everyIdp`). */
async function deleteQuarantined(client: pg.PoolClient, ring: KeyRing, target: Target, everyIdp: boolean): Promise<number> {
  if ('pairs' in target) {
    const rows = target.pairs.flatMap((pair) => subjectFingerprintCandidates(ring, pair.subject).map((fp) => [pair.idp, fp] as const));
    const deleted = await client.query('DELETE FROM quarantined_captures WHERE (idp, subject_fp) IN (SELECT * FROM unnest($1::text[], $2::text[]))', [
      rows.map((row) => row[0]),
      rows.map((row) => row[1]),
    ]);
    return deleted.rowCount ?? 0;
  }
  const deleted = await client.query('DELETE FROM quarantined_captures WHERE subject_fp = ANY($1::text[]) AND ($2::boolean OR idp = ANY($3::text[]))', [
    subjectFingerprintCandidates(ring, target.subject),
    everyIdp,
    target.idps,
  ]);
  return deleted.rowCount ?? 0;
}

/** Refuses a request that names no user (or two ways), or one the erasure could not finish without the key ring. */
export async function checkErasable(pool: pg.Pool, request: EraseRequest): Promise<void> {
  if ((request.subject === undefined) === (request.email === undefined)) throw new VaultError('name the user by subject or by email', 'invalid_argument');
  if (!request.ring) await refuseWithoutRing(pool, request.idps);
}

/** The user's active grants the request names: what is revoked at the IdPs before the erasure. */
export async function activeGrantsToErase(pool: pg.Pool, request: EraseRequest): Promise<Array<{ idp: string; subject: string }>> {
  const idps = request.idps === undefined ? await knownIdps(pool) : [...request.idps];
  return grantsOf(pool, idps, request, 'SELECT', "AND status = 'active'");
}

export async function eraseSubject(pool: pg.Pool, request: EraseRequest): Promise<EraseResult> {
  await checkErasable(pool, request);
  const everyIdp = request.idps === undefined;
  const idpsNow = async (client: pg.Pool | pg.PoolClient) => (everyIdp ? knownIdps(client) : [...request.idps!]);
  const subject = request.subject;
  const lockTimedOut = (error: unknown, what: string): never => {
    if (errorCode(error) === LOCK_NOT_AVAILABLE) {
      throw new VaultError(
        `the erasure waited over ${ERASE_LOCK_TIMEOUT_MS} ms for capture writes (or a refresh holding the grant); ${what}, try again`,
        'unavailable',
        { cause: error },
      );
    }
    throw error;
  };
  // Step 1: the user's capture events as they are now, holding off no capture batch.
  const early = await withTransaction(
    pool,
    async (client) => {
      const idps = await idpsNow(client);
      return deleteEventsAndHints(client, subject !== undefined ? { idps, subject } : { pairs: await grantsOf(client, idps, request, 'SELECT') }, everyIdp);
    },
    { opening: [LOCK_TIMEOUT] },
  ).catch((error: unknown) => lockTimedOut(error, 'nothing was deleted'));
  // Step 2: with capture batches held off, everything else and what they wrote meanwhile, and the tombstone.
  return withTransaction(
    pool,
    async (client) => {
      const idps = await idpsNow(client);
      const deleted = await grantsOf(client, idps, request, 'DELETE');
      // By subject, events of the user are deleted even where no grant is left (held, failed logins).
      const target: Target = subject !== undefined ? { idps, subject } : { pairs: deleted };
      const events = await deleteEventsAndHints(client, target, everyIdp);
      // Without a ring there were none to find (refuseWithoutRing); one quarantined since is dropped by the tombstone at a retry.
      const quarantined = request.ring ? await deleteQuarantined(client, request.ring, target, everyIdp) : 0;
      // By subject the user is erased at the IdPs named (every IdP: '*'), grant or not; by email, the users found.
      const erased = subject === undefined ? deleted : (everyIdp ? [EVERY_IDP] : request.idps!).map((idp) => ({ idp, subject }));
      await writeTombstones(client, erased);
      deleted.sort((a, b) => a.idp.localeCompare(b.idp) || a.subject.localeCompare(b.subject));
      return { deleted, captureEventsDeleted: early + events, quarantinedCapturesDeleted: quarantined };
    },
    { opening: [LOCK_TIMEOUT, HOLD_OFF_CAPTURE_WRITES] },
  ).catch((error: unknown) =>
    lockTimedOut(error, early > 0 ? `only its ${early} capture events were deleted (its grants and the rest were not)` : 'nothing was deleted'),
  );
}
