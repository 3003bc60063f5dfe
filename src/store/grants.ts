// Grants and capture events in Postgres. Each batch of captures is one transaction; a capture
// is applied at most once (capture_id is unique), so a replayed batch changes nothing.
import type pg from 'pg';
import type { Capture, TokenSet } from '../capture/types.js';
import { fingerprint, open, parseDecrypted, seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { decodeIdTokenClaims, vouchedEmail } from '../capture/jwt.js';
import { describeCaptureFailure, isPostgresUnavailable } from './errors.js';
import { withTransaction } from './pool.js';
import { erasedSql, HOLD_OFF_ERASURES } from './tombstones.js';
import { mapWithTurns } from '../lib/turns.js';
import { quarantineCapture, type QuarantinedCapture, type QuarantineStage } from './quarantine.js';

export interface RecordResult {
  /**
   * Captures set aside in quarantined_captures, in the batch's transaction: each failed when
   * written alone for a reason other than Postgres being unavailable. The rest were written.
   */
  quarantined: QuarantinedCapture[];
  /**
   * Profile captures whose held grant is sealed under a key this ring lacks (a key rollout in
   * progress): the grant stays held (pending_grants), unchanged, and the profile is kept as a hint.
   */
  heldUnreadable?: Array<{ captureId: string; idp: string; keyId: string }>;
  /**
   * Captures of a user erased after they were observed (store/tombstones.ts): recorded `erased`, no
   * grant stored; one that could not be written alone is not quarantined either, just dropped.
   */
  erased?: string[];
}

/** A capture the pump sets aside before writing (its verification threw), with why. */
export interface SetAside {
  capture: Capture;
  stage: QuarantineStage;
  label: QuarantinedCapture['label'];
  reason: string;
}

/** A capture_events row that stands for `count` responses of one kind (ingest/capture-refusals.ts). */
export type CaptureSummary = Capture & { count?: number };

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
}

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

type TokenField = 'access_token' | 'refresh_token' | 'id_token' | 'extras';

interface PendingRow {
  capture_id: string;
  idp: string;
  access_token_fp: string;
  observed_at: Date;
  key_id: string;
  payload: Buffer;
}

/** What a held grant keeps until its user is known. */
interface PendingPayload {
  tokens: TokenSet;
  issuer: string | null;
  clientId: string | null;
  email: string | null;
  httpStatus: number | null;
}

export interface PendingGrant extends PendingPayload {
  captureId: string;
  idp: string;
  observedAt: Date;
}

/** Response fields beyond the standard ones. Rows written before 000004 also carry `claims` here. */
interface SealedExtras {
  response: Record<string, unknown>;
}

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
function loginRounds(captures: readonly Capture[]): Capture[][] {
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

export class GrantStore {
  /** Where the batch being written notes held grants it cannot open (one writer per store). */
  private heldUnreadable: NonNullable<RecordResult['heldUnreadable']> = [];
  /** Where the batch being written notes captures it dropped for an erasure. */
  private erased: string[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly ring: KeyRing,
  ) {}

  /**
   * Writes a batch in one transaction: an event per capture, and the grant for each stored one.
   * One capture that cannot be written (a value Postgres refuses, a held grant that cannot be
   * opened, a bug) must not block the batch and everything behind it: unless Postgres is
   * unavailable (then the batch throws and is retried), the batch is written again with a
   * savepoint per capture, and each capture that fails alone is sealed into quarantined_captures
   * in the same transaction. `setAside` (captures whose verification threw) go there directly.
   */
  async recordCaptures(captures: readonly Capture[], setAside: readonly SetAside[] = []): Promise<RecordResult> {
    try {
      return await this.writeBatch(captures, setAside, false);
    } catch (error) {
      if (isPostgresUnavailable(error)) throw error;
      return this.writeBatch(captures, setAside, true);
    }
  }

  /** Writes one capture inside the caller's transaction (a quarantined capture retried); erased: dropped for a tombstone. */
  async writeCaptureIn(client: pg.PoolClient, capture: Capture): Promise<{ erased: boolean }> {
    this.heldUnreadable = [];
    this.erased = [];
    await this.apply(client, capture);
    return { erased: this.erased.includes(capture.captureId) };
  }

  private async writeBatch(captures: readonly Capture[], setAside: readonly SetAside[], oneByOne: boolean): Promise<RecordResult> {
    return withTransaction(this.pool, async (client) => {
      const quarantined: QuarantinedCapture[] = [];
      const heldUnreadable: NonNullable<RecordResult['heldUnreadable']> = [];
      this.heldUnreadable = heldUnreadable;
      const erased: string[] = [];
      this.erased = erased;
      for (const { capture, stage, label, reason } of setAside) {
        const { known, erased: ofErasedUser } = await quarantineCapture(client, this.ring, capture, stage, reason);
        if (ofErasedUser) erased.push(capture.captureId);
        else quarantined.push({ captureId: capture.captureId, idp: capture.idp, label, reason, known });
      }
      if (!oneByOne) {
        await this.applyBatch(client, captures);
        return { quarantined, heldUnreadable, erased };
      }
      for (const capture of captures) {
        const noted = heldUnreadable.length;
        const notedErased = erased.length;
        await client.query('SAVEPOINT capture');
        try {
          await this.apply(client, capture);
          await client.query('RELEASE SAVEPOINT capture');
        } catch (error) {
          // Postgres going away mid-batch fails every capture alike: the whole batch is retried.
          if (isPostgresUnavailable(error)) throw error;
          await client.query('ROLLBACK TO SAVEPOINT capture');
          heldUnreadable.length = noted;
          erased.length = notedErased;
          const { label, reason } = describeCaptureFailure(error);
          // Not kept when its user was erased after it was observed: dropped, as a written one would be.
          const { known, erased: ofErasedUser } = await quarantineCapture(client, this.ring, capture, 'write', reason);
          if (ofErasedUser) erased.push(capture.captureId);
          else quarantined.push({ captureId: capture.captureId, idp: capture.idp, label, reason, known });
        }
      }
      return { quarantined, heldUnreadable, erased };
    }, { opening: [HOLD_OFF_ERASURES] });
  }

  private async apply(client: pg.PoolClient, capture: Capture): Promise<void> {
    const outcome = (await this.insertEvents(client, [capture])).get(capture.captureId);
    if (outcome === undefined) return;
    if (outcome === 'erased') this.erased.push(capture.captureId);
    else await this.applyAfterEvent(client, capture);
  }

  private async applyAfterEvent(client: pg.PoolClient, capture: Capture): Promise<void> {
    if (capture.outcome === 'stored') await this.upsertGrant(client, capture);
    else if (capture.outcome === 'no_subject' && capture.tokens?.accessToken) await this.holdOrLink(client, capture);
    else if (capture.outcome === 'profile' && capture.profile) await this.linkProfile(client, capture);
  }

  /**
   * The fast path: all events in one statement, then the logins in as few upserts as there are
   * logins of one grant in the batch (usually one): round k writes the k-th login of each grant,
   * so each is merged over the one before, in order. Merging happens in SQL (fields a login lacks
   * keep their stored ciphertext), so no stored row is opened on the write path.
   */
  private async applyBatch(client: pg.PoolClient, captures: readonly Capture[]): Promise<void> {
    const fresh = await this.insertEvents(client, captures);
    for (const [captureId, outcome] of fresh) if (outcome === 'erased') this.erased.push(captureId);
    const pending = captures.filter((capture) => fresh.has(capture.captureId) && fresh.get(capture.captureId) !== 'erased');
    for (const round of loginRounds(pending)) await this.upsertGrantRows(client, await mapWithTurns(round, (capture) => this.grantRow(capture)));
    for (const capture of pending) {
      if (capture.outcome !== 'stored') await this.applyAfterEvent(client, capture);
    }
  }

  async findGrant(idp: string, subject: string): Promise<GrantRecord | undefined> {
    const { rows } = await this.pool.query<GrantRow>('SELECT * FROM grants WHERE idp = $1 AND subject = $2', [idp, subject]);
    return rows[0] ? this.decrypt(rows[0]) : undefined;
  }

  /**
   * The candidates of the Okta hook's `match: email`: active grants of an IdP whose email is one of
   * `emails` (lower-case); with `verifiedOnly`, only grants whose id_token was verified. Postgres
   * weighs every candidate, however many there are (anyone may claim an address at some IdPs, so
   * look-alikes must not push the real user out): it returns the newest two whose id_token vouches
   * for one of the addresses (vouched_email), those whose vouching is not recorded, bounded, and the
   * newest candidate. One query; only those rows are opened.
   */
  async findEmailCandidates(idp: string, emails: readonly string[], options: { verifiedOnly: boolean; uncheckedLimit: number }): Promise<EmailCandidates> {
    const { rows } = await this.pool.query<GrantRow & { candidate: 'vouched' | 'unchecked' | 'newest' }>(
      `WITH candidates AS MATERIALIZED (
         SELECT subject, updated_at, vouched_email,
                (vouched_email IS NOT NULL AND vouched_email_checked_at IS NOT DISTINCT FROM id_token_observed_at) AS recorded
         FROM grants WHERE idp = $1 AND lower(email) = ANY($2::text[]) AND status = 'active' AND (verified OR NOT $3)
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
    const openOnce = (row: GrantRow) => opened.get(row.subject) ?? opened.set(row.subject, this.decrypt(row)).get(row.subject)!;
    const of = (candidate: string) => rows.filter((row) => row.candidate === candidate).map(openOnce);
    return { vouched: of('vouched'), unchecked: of('unchecked'), newest: of('newest')[0] };
  }

  /**
   * Stores tokens the sidecar obtained itself (a refresh) inside the caller's transaction, which
   * already holds the row lock; fields the response lacks keep their stored values.
   */
  async writeObtainedTokens(client: pg.PoolClient, capture: Capture): Promise<void> {
    // Tokens the IdP just issued always win (the old refresh token may be dead now), whatever the
    // clocks of the sidecar that captured the stored row said.
    await this.upsertGrantRows(client, [this.grantRow(capture)], { obtained: true });
  }

  /**
   * A refresh answer that cannot be the grant's (a token over its bound, operations/refresh-answer.ts),
   * inside the caller's transaction: its event is recorded `too_large`, so its spooled copy (the
   * outbox) is a replay the writer skips, and the answer is sealed into the quarantine under
   * `quarantineId` (an event of its own when retried) for an operator to recover.
   */
  async setAsideRefreshAnswer(client: pg.PoolClient, answer: Capture, quarantineId: string, reason: string): Promise<void> {
    await this.insertEvents(client, [{ ...answer, outcome: 'too_large', tokens: undefined, detail: reason }]);
    await quarantineCapture(client, this.ring, { ...answer, captureId: quarantineId }, 'write', reason);
  }

  /** Grants held without a subject, newest first, tokens decrypted (for operators). */
  async findPending(idp: string): Promise<PendingGrant[]> {
    const { rows } = await this.pool.query<PendingRow>('SELECT * FROM pending_grants WHERE idp = $1 ORDER BY observed_at DESC', [idp]);
    return rows.map((row) => ({ captureId: row.capture_id, idp: row.idp, observedAt: row.observed_at, ...this.openPending(row) }));
  }

  pendingBinding(idp: string, captureId: string): FieldBinding {
    return { idp, subject: `pending:${captureId}`, field: 'pending' };
  }

  private openPending(row: PendingRow): PendingPayload {
    return parseDecrypted<PendingPayload>(open(this.ring, row.key_id, row.payload, this.pendingBinding(row.idp, row.capture_id)), `held grant ${row.capture_id}`);
  }

  /** A held grant or profile now names its user: linked, or erased when that user was erased after it was observed. */
  private async markLinked(client: pg.PoolClient, captureId: string, subject: string, erased = false): Promise<void> {
    await client.query('UPDATE capture_events SET outcome = $3, subject = $2 WHERE capture_id = $1', [captureId, subject, erased ? 'erased' : 'linked']);
    if (erased) this.erased.push(captureId);
  }

  /** A token response without a user: link it at once if its profile was already seen, else hold it. */
  private async holdOrLink(client: pg.PoolClient, capture: Capture): Promise<void> {
    const tokens = capture.tokens!;
    const fp = fingerprint(this.ring, tokens.accessToken!);
    const { rows } = await client.query<{ subject: string; email: string | null }>(
      'DELETE FROM subject_hints WHERE idp = $1 AND access_token_fp = $2 RETURNING subject, email',
      [capture.idp, fp],
    );
    const hint = rows[0];
    if (hint) {
      const erased = await this.upsertGrant(client, { ...capture, outcome: 'stored', subject: hint.subject, email: capture.email ?? hint.email ?? undefined });
      await this.markLinked(client, capture.captureId, hint.subject, erased);
      return;
    }
    const payload: PendingPayload = {
      tokens,
      issuer: capture.issuer ?? null,
      clientId: capture.clientId ?? null,
      email: capture.email ?? null,
      httpStatus: capture.httpStatus ?? null,
    };
    await client.query(
      `INSERT INTO pending_grants (capture_id, idp, access_token_fp, observed_at, key_id, payload)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (capture_id) DO NOTHING`,
      [capture.captureId, capture.idp, fp, capture.observedAt, this.ring.activeKeyId, seal(this.ring, JSON.stringify(payload), this.pendingBinding(capture.idp, capture.captureId))],
    );
  }

  /** A profile names the user of an access token: move the held grant with that token into grants. */
  private async linkProfile(client: pg.PoolClient, capture: Capture): Promise<void> {
    const profile = capture.profile!;
    const fp = fingerprint(this.ring, profile.accessToken);
    const { rows } = await client.query<PendingRow>(
      'SELECT * FROM pending_grants WHERE idp = $1 AND access_token_fp = $2 ORDER BY observed_at DESC LIMIT 1 FOR UPDATE',
      [capture.idp, fp],
    );
    const pending = rows[0];
    if (pending && !this.ring.keys.has(pending.key_id)) {
      this.heldUnreadable.push({ captureId: capture.captureId, idp: capture.idp, keyId: pending.key_id });
    }
    if (!pending || !this.ring.keys.has(pending.key_id)) {
      const linked = await client.query('SELECT 1 FROM grants WHERE idp = $1 AND access_token_fp = $2', [capture.idp, fp]);
      if (linked.rowCount === 0) {
        await client.query("DELETE FROM subject_hints WHERE observed_at < now() - interval '10 minutes'");
        // No hint of an erased user: it would link that user's tokens when they arrive.
        const hinted = await client.query(
          `INSERT INTO subject_hints (idp, access_token_fp, subject, email, observed_at)
           SELECT $1, $2, $3, $4, $5 WHERE NOT ${erasedSql('$1', '$3', '$5::timestamptz')}
           ON CONFLICT (idp, access_token_fp) DO UPDATE SET subject = EXCLUDED.subject, email = EXCLUDED.email, observed_at = EXCLUDED.observed_at`,
          [capture.idp, fp, profile.subject, profile.email ?? null, capture.observedAt],
        );
        if (hinted.rowCount === 0) await this.markLinked(client, capture.captureId, profile.subject, true);
      }
      return;
    }
    const held = this.openPending(pending);
    const erased = await this.upsertGrant(client, {
      ...capture,
      captureId: pending.capture_id,
      observedAt: pending.observed_at,
      httpStatus: held.httpStatus ?? undefined,
      outcome: 'stored',
      subject: profile.subject,
      issuer: held.issuer ?? undefined,
      clientId: held.clientId ?? undefined,
      email: held.email ?? profile.email,
      tokens: held.tokens,
    });
    await client.query('DELETE FROM pending_grants WHERE idp = $1 AND access_token_fp = $2', [capture.idp, fp]);
    await this.markLinked(client, capture.captureId, profile.subject, erased);
    await this.markLinked(client, pending.capture_id, profile.subject, erased);
  }

  private fp(token: string | undefined): string | null {
    return token ? fingerprint(this.ring, token) : null;
  }

  /**
   * Inserts the events not seen before; returns their capture ids (a replayed capture is skipped)
   * with the outcome recorded: a login of a user erased after it was observed is `erased`.
   */
  private async insertEvents(client: pg.PoolClient, captures: readonly CaptureSummary[]): Promise<Map<string, string>> {
    const columns: unknown[][] = Array.from({ length: 12 }, () => []);
    for (const capture of captures) {
      const tokens = capture.tokens;
      // A profile is recorded as unmatched until it links a held grant.
      const outcome = capture.outcome === 'profile' ? 'unmatched' : capture.outcome;
      [
        capture.captureId,
        capture.observedAt,
        capture.idp,
        capture.subject ?? null,
        capture.httpStatus ?? null,
        outcome,
        capture.errorCode?.slice(0, 200) ?? null,
        // Our own words, never the IdP's (capture/); cut all the same, as error_code is.
        capture.detail?.slice(0, 200) ?? null,
        this.fp(tokens?.accessToken ?? capture.profile?.accessToken),
        this.fp(tokens?.refreshToken),
        this.fp(tokens?.idToken),
        capture.count ?? 1,
      ].forEach((value, index) => columns[index]!.push(value));
    }
    const { rows } = await client.query<{ capture_id: string; outcome: string }>(
      `INSERT INTO capture_events (capture_id, observed_at, idp, subject, http_status, outcome, error_code, detail,
                                   access_token_fp, refresh_token_fp, id_token_fp, count)
       SELECT capture_id, observed_at, idp, subject, http_status,
              CASE WHEN outcome = 'stored' AND ${erasedSql('event.idp', 'event.subject', 'event.observed_at')} THEN 'erased' ELSE outcome END,
              error_code, detail, access_token_fp, refresh_token_fp, id_token_fp, count
       FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                   $8::text[], $9::text[], $10::text[], $11::text[], $12::int[])
         AS event(capture_id, observed_at, idp, subject, http_status, outcome, error_code, detail, access_token_fp, refresh_token_fp, id_token_fp, count)
       ON CONFLICT (capture_id) DO NOTHING
       RETURNING capture_id, outcome`,
      columns,
    );
    return new Map(rows.map((row) => [row.capture_id, row.outcome]));
  }

  /**
   * Summary rows of responses that carried no tokens (idp_error, unparseable, ...), written past
   * the spool: a relaxed commit (no wait for the WAL flush), as nothing here can be lost but a count.
   */
  async recordCaptureSummaries(summaries: readonly CaptureSummary[]): Promise<void> {
    await withTransaction(this.pool, async (client) => {
      await client.query("SET LOCAL synchronous_commit = 'off'");
      await this.insertEvents(client, summaries);
    });
  }

  /**
   * Stores a login's tokens, merged by capture time as every capture is; inside the caller's
   * transaction (a refresh answer applied again after its first write failed uses it too).
   * True when nothing was stored because the user was erased after the capture was observed.
   */
  async upsertGrant(client: pg.PoolClient, capture: Capture): Promise<boolean> {
    return (await this.upsertGrantRows(client, [this.grantRow(capture)])) > 0;
  }

  /** The grants row for a capture, sealed under the active key; NULL where the capture lacks a field. */
  private grantRow(capture: Capture): unknown[] {
    const tokens = capture.tokens!;
    const subject = capture.subject!;
    const binding = (field: TokenField): FieldBinding => ({ idp: capture.idp, subject, field });
    const sealOrNull = (value: string | null | undefined, field: TokenField): Buffer | null =>
      value ? seal(this.ring, value, binding(field)) : null;
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
      this.ring.activeKeyId,
      sealOrNull(tokens.accessToken, 'access_token'),
      sealOrNull(tokens.refreshToken, 'refresh_token'),
      sealOrNull(tokens.idToken, 'id_token'),
      seal(this.ring, JSON.stringify(extras), binding('extras')),
      this.fp(tokens.accessToken),
      secondsAfter(observedAt, tokens.expiresIn),
      tokens.refreshToken ? secondsAfter(observedAt, tokens.refreshExpiresIn) : null,
      tokens.idToken ? epochSeconds(tokens.claims?.exp) : null,
      observedAt,
      capture.verified === true,
      vouched,
      // A refresh's answer: its `verified` is a claim the stored grant must back (upsertGrantRows).
      capture.obtainedByRefresh === true,
    ];
  }

  /**
   * Upserts grant rows in one statement; at most one row per (idp, subject). Each token is kept
   * per field, the newest one seen: the access token and the row's other fields follow the newest
   * login, while a refresh token or id_token is replaced only by one captured later than the one
   * stored (`*_observed_at`). So a login that lacks a field keeps the stored ciphertext and key id,
   * and one that arrives late (a replayed spool, a slower sidecar, a refresh answer applied from
   * the outbox) still fills in a refresh token nothing newer replaced. Merging needs no key: a
   * sidecar whose ring lacks the stored key (a key rollout) cannot lose it. Nothing captured before
   * a revocation touches the revoked grant. Tokens the sidecar obtained itself (a refresh under the
   * row lock) always apply, whatever the clocks of the sidecar that captured the stored row said.
   * Nothing of a user erased at or after the capture's time is stored (store/tombstones.ts): returns
   * how many rows were dropped so. A refresh's answer (by_refresh, spooled or applied at once) is
   * verified only as far as the grant it refreshes is, read under the row lock the upsert holds: it
   * never makes an unverified grant verified, nor makes a new grant verified.
   */
  private async upsertGrantRows(client: pg.PoolClient, rows: unknown[][], options: { obtained?: boolean } = {}): Promise<number> {
    const columns: unknown[][] = Array.from({ length: 20 }, (_, index) => rows.map((row) => row[index]));
    // The refresh answer's own claim for the row being updated (EXCLUDED.verified is false for it: an insert is never verified).
    const refreshClaim = rows.some((row) => row[19] === true)
      ? '(SELECT claim.verified FROM input AS claim WHERE claim.by_refresh AND claim.idp = EXCLUDED.idp AND claim.subject = EXCLUDED.subject)'
      : 'NULL::boolean';
    const notRevokedSince = options.obtained ? 'true' : `(grants.status <> 'revoked' OR grants.updated_at <= EXCLUDED.captured_at)`;
    const fresh = options.obtained ? 'true' : `(grants.captured_at <= EXCLUDED.captured_at AND ${notRevokedSince})`;
    const newer = (field: 'refresh_token' | 'id_token') =>
      options.obtained
        ? `(EXCLUDED.${field} IS NOT NULL)`
        : `(EXCLUDED.${field} IS NOT NULL AND ${notRevokedSince} AND (grants.${field} IS NULL OR COALESCE(grants.${field}_observed_at, grants.captured_at) <= EXCLUDED.captured_at))`;
    // Rows from before migration 000004 name one key id for every field.
    const storedKeyId = (field: 'refresh_token' | 'id_token') => `COALESCE(grants.${field}_key_id, CASE WHEN grants.${field} IS NULL THEN NULL ELSE grants.key_id END)`;
    const storedObservedAt = (field: 'refresh_token' | 'id_token') => `COALESCE(grants.${field}_observed_at, CASE WHEN grants.${field} IS NULL THEN NULL ELSE grants.captured_at END)`;
    const perField = (field: 'refresh_token' | 'id_token') => `
         ${field} = CASE WHEN ${newer(field)} THEN EXCLUDED.${field} ELSE grants.${field} END,
         ${field}_key_id = CASE WHEN ${newer(field)} THEN EXCLUDED.${field}_key_id ELSE ${storedKeyId(field)} END,
         ${field}_expires_at = CASE WHEN ${newer(field)} THEN EXCLUDED.${field}_expires_at ELSE grants.${field}_expires_at END,
         ${field}_observed_at = CASE WHEN ${newer(field)} THEN EXCLUDED.captured_at ELSE ${storedObservedAt(field)} END,`;
    const rowLevel = (field: string) => `${field} = CASE WHEN ${fresh} THEN EXCLUDED.${field} ELSE grants.${field} END`;
    const filled = (field: string) => `${field} = CASE WHEN ${fresh} THEN COALESCE(EXCLUDED.${field}, grants.${field}) ELSE COALESCE(grants.${field}, EXCLUDED.${field}) END`;
    const erased = erasedSql('row.idp', 'row.subject', 'row.captured_at');
    const { rows: result } = await client.query<{ erased: number }>(
      `WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                              $9::bytea[], $10::bytea[], $11::bytea[], $12::bytea[], $13::text[],
                              $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::boolean[], $19::text[], $20::boolean[])
           AS row(idp, subject, issuer, client_id, email, scope, token_type, key_id,
                  access_token, refresh_token, id_token, extras, access_token_fp,
                  access_token_expires_at, refresh_token_expires_at, id_token_expires_at, captured_at, verified, vouched_email, by_refresh)
       ), upserted AS (
       INSERT INTO grants (idp, subject, issuer, client_id, email, scope, token_type, key_id,
                           access_token, refresh_token, id_token, extras, access_token_fp,
                           access_token_expires_at, refresh_token_expires_at, id_token_expires_at,
                           status, captured_at, updated_at, version, refresh_token_key_id, id_token_key_id, verified,
                           refresh_token_observed_at, id_token_observed_at, vouched_email, vouched_email_checked_at)
       SELECT idp, subject, issuer, client_id, email, COALESCE(string_to_array(NULLIF(scope, ''), ' '), '{}'), token_type, key_id,
              access_token, refresh_token, id_token, extras, access_token_fp,
              access_token_expires_at, refresh_token_expires_at, id_token_expires_at,
              'active', captured_at, now(), 1,
              CASE WHEN refresh_token IS NULL THEN NULL ELSE key_id END, CASE WHEN id_token IS NULL THEN NULL ELSE key_id END, verified AND NOT by_refresh,
              CASE WHEN refresh_token IS NULL THEN NULL ELSE captured_at END, CASE WHEN id_token IS NULL THEN NULL ELSE captured_at END,
              vouched_email, CASE WHEN id_token IS NULL THEN NULL ELSE captured_at END
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
         status = CASE WHEN ${fresh} THEN 'active' ELSE grants.status END,
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

  /** Opens a row read by other vault modules (refresh, revoke) inside their own transaction. */
  decrypt(row: GrantRow): GrantRecord {
    const binding = (field: TokenField): FieldBinding => ({ idp: row.idp, subject: row.subject, field });
    // Rows from before per-field key ids (migration 000004) name one key for every field.
    const openOrNull = (value: Buffer | null, field: TokenField, keyId?: string | null): string | null =>
      value ? open(this.ring, keyId ?? row.key_id, value, binding(field)) : null;
    const extras = parseDecrypted<SealedExtras>(openOrNull(row.extras, 'extras') ?? '{"response":{}}', `extras of grant (${row.idp}, ${row.subject})`);
    const idToken = openOrNull(row.id_token, 'id_token', row.id_token_key_id);
    return {
      idp: row.idp,
      subject: row.subject,
      issuer: row.issuer,
      clientId: row.client_id,
      email: row.email,
      scope: row.scope,
      tokenType: row.token_type,
      keyId: row.key_id,
      accessToken: openOrNull(row.access_token, 'access_token'),
      refreshToken: openOrNull(row.refresh_token, 'refresh_token', row.refresh_token_key_id),
      idToken,
      extras: extras.response,
      claims: idToken ? (decodeIdTokenClaims(idToken) ?? null) : null,
      accessTokenExpiresAt: row.access_token_expires_at,
      refreshTokenExpiresAt: row.refresh_token_expires_at,
      idTokenExpiresAt: row.id_token_expires_at,
      status: row.status,
      verified: row.verified,
      capturedAt: row.captured_at,
      updatedAt: row.updated_at,
      version: row.version,
    };
  }
}
