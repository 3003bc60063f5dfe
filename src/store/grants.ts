// Grants and capture events in Postgres. Each batch of captures is one transaction; a capture
// is applied at most once (capture_id is unique), so a replayed batch changes nothing.
// GrantStore is the capture writer and the one door to the grant SQL behind it: the upsert
// (grant-upsert.ts), held grants (pending-grants.ts), reads (grant-reads.ts), events
// (capture-events.ts).
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import type { FieldBinding, KeyRing } from '../keys/key-ring.js';
import { describeCaptureFailure, isPostgresUnavailable } from './errors.js';
import { withTransaction } from './pool.js';
import { HOLD_OFF_ERASURES } from './tombstones.js';
import { mapWithTurns } from '../lib/turns.js';
import { quarantineCapture, type QuarantinedCapture, type QuarantineSealer, type QuarantineStage } from './quarantine.js';
import { insertEvents, recordCaptureSummaries, type CaptureSummary } from './capture-events.js';
import { grantRow, loginRounds, upsertGrant, upsertGrantRows } from './grant-upsert.js';
import { findPending, holdOrLink, linkProfile, pendingBinding, type BatchNotes, type PendingGrant } from './pending-grants.js';
import { decryptGrant, findEmailCandidates, findGrant, type EmailCandidates, type GrantRecord, type OpenableGrantRow } from './grant-reads.js';

export type { CaptureSummary } from './capture-events.js';
export type { PendingGrant } from './pending-grants.js';
export type { EmailCandidates, GrantRecord, GrantRow, OpenableGrantRow } from './grant-reads.js';

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

export class GrantStore {
  /** `sealQuarantined` seals a capture set aside (ingest/quarantine.ts): the quarantine's record format is not the store's. */
  constructor(
    private readonly pool: pg.Pool,
    private readonly ring: KeyRing,
    private readonly sealQuarantined: QuarantineSealer,
  ) {}

  /** Sets `capture` aside in quarantined_captures, sealed, inside the caller's transaction (store/quarantine.ts). */
  private quarantine(client: pg.PoolClient, capture: Capture, stage: QuarantineStage, reason: string): Promise<{ known: boolean; erased: boolean }> {
    return quarantineCapture(client, this.ring, capture, this.sealQuarantined(this.ring, capture), stage, reason);
  }

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
    const notes: BatchNotes = { heldUnreadable: [], erased: [] };
    await this.apply(client, notes, capture);
    return { erased: notes.erased.includes(capture.captureId) };
  }

  private async writeBatch(captures: readonly Capture[], setAside: readonly SetAside[], oneByOne: boolean): Promise<RecordResult> {
    return withTransaction(
      this.pool,
      async (client) => {
        const quarantined: QuarantinedCapture[] = [];
        // What this batch notes besides its events; a capture rolled back to its savepoint takes its notes with it.
        const notes: BatchNotes = { heldUnreadable: [], erased: [] };
        const { heldUnreadable, erased } = notes;
        for (const { capture, stage, label, reason } of setAside) {
          const { known, erased: ofErasedUser } = await this.quarantine(client, capture, stage, reason);
          if (ofErasedUser) erased.push(capture.captureId);
          else quarantined.push({ captureId: capture.captureId, idp: capture.idp, label, reason, known });
        }
        if (!oneByOne) {
          await this.applyBatch(client, notes, captures);
          return { quarantined, heldUnreadable, erased };
        }
        for (const capture of captures) {
          const noted = heldUnreadable.length;
          const notedErased = erased.length;
          await client.query('SAVEPOINT capture');
          try {
            await this.apply(client, notes, capture);
            await client.query('RELEASE SAVEPOINT capture');
          } catch (error) {
            // Postgres going away mid-batch fails every capture alike: the whole batch is retried.
            if (isPostgresUnavailable(error)) throw error;
            await client.query('ROLLBACK TO SAVEPOINT capture');
            heldUnreadable.length = noted;
            erased.length = notedErased;
            const { label, reason } = describeCaptureFailure(error);
            // Not kept when its user was erased after it was observed: dropped, as a written one would be.
            const { known, erased: ofErasedUser } = await this.quarantine(client, capture, 'write', reason);
            if (ofErasedUser) erased.push(capture.captureId);
            else quarantined.push({ captureId: capture.captureId, idp: capture.idp, label, reason, known });
          }
        }
        return { quarantined, heldUnreadable, erased };
      },
      { opening: [HOLD_OFF_ERASURES] },
    );
  }

  private async apply(client: pg.PoolClient, notes: BatchNotes, capture: Capture): Promise<void> {
    const outcome = (await insertEvents(client, this.ring, [capture])).get(capture.captureId);
    if (outcome === undefined) return;
    if (outcome === 'erased') notes.erased.push(capture.captureId);
    else await this.applyAfterEvent(client, notes, capture);
  }

  private async applyAfterEvent(client: pg.PoolClient, notes: BatchNotes, capture: Capture): Promise<void> {
    if (capture.outcome === 'stored') await this.upsertGrant(client, capture);
    else if (capture.outcome === 'no_subject' && capture.tokens?.accessToken) await holdOrLink(client, this.ring, notes, capture);
    else if (capture.outcome === 'profile' && capture.profile) await linkProfile(client, this.ring, notes, capture);
  }

  /**
   * The fast path: all events in one statement, then the logins in as few upserts as there are
   * logins of one grant in the batch (usually one): round k writes the k-th login of each grant,
   * so each is merged over the one before, in order. Merging happens in SQL (fields a login lacks
   * keep their stored ciphertext), so no stored row is opened on the write path.
   */
  private async applyBatch(client: pg.PoolClient, notes: BatchNotes, captures: readonly Capture[]): Promise<void> {
    const fresh = await insertEvents(client, this.ring, captures);
    for (const [captureId, outcome] of fresh) if (outcome === 'erased') notes.erased.push(captureId);
    const pending = captures.filter((capture) => fresh.has(capture.captureId) && fresh.get(capture.captureId) !== 'erased');
    for (const round of loginRounds(pending)) await upsertGrantRows(client, await mapWithTurns(round, (capture) => grantRow(this.ring, capture)));
    for (const capture of pending) {
      if (capture.outcome !== 'stored') await this.applyAfterEvent(client, notes, capture);
    }
  }

  /** `openWhenRead`: sealed fields are opened when first read (grant-reads.ts decryptGrantWhenRead). */
  async findGrant(idp: string, subject: string, options: { openWhenRead?: boolean } = {}): Promise<GrantRecord | undefined> {
    return findGrant(this.pool, this.ring, idp, subject, options);
  }

  /** The candidates of the Okta hook's `match: email` (grant-reads.ts findEmailCandidates). */
  async findEmailCandidates(idp: string, emails: readonly string[], options: { verifiedOnly: boolean; uncheckedLimit: number }): Promise<EmailCandidates> {
    return findEmailCandidates(this.pool, this.ring, idp, emails, options);
  }

  /**
   * Stores tokens the sidecar obtained itself (a refresh) inside the caller's transaction, which
   * already holds the row lock; fields the response lacks keep their stored values.
   */
  async writeObtainedTokens(client: pg.PoolClient, capture: Capture): Promise<void> {
    // Tokens the IdP just issued always win (the old refresh token may be dead now), whatever the
    // clocks of the sidecar that captured the stored row said.
    await upsertGrantRows(client, [grantRow(this.ring, capture)], { obtained: true });
  }

  /**
   * A refresh answer that cannot be the grant's (a token over its bound, operations/refresh-answer.ts),
   * inside the caller's transaction: its event is recorded `too_large`, so its spooled copy (the
   * outbox) is a replay the writer skips, and the answer is sealed into the quarantine under
   * `quarantineId` (an event of its own when retried) for an operator to recover.
   */
  async setAsideRefreshAnswer(client: pg.PoolClient, answer: Capture, quarantineId: string, reason: string): Promise<void> {
    await insertEvents(client, this.ring, [{ ...answer, outcome: 'too_large', tokens: undefined, detail: reason }]);
    await this.quarantine(client, { ...answer, captureId: quarantineId }, 'write', reason);
  }

  /** Grants held without a subject, newest first, tokens decrypted (for operators). */
  async findPending(idp: string): Promise<PendingGrant[]> {
    return findPending(this.pool, this.ring, idp);
  }

  pendingBinding(idp: string, captureId: string): FieldBinding {
    return pendingBinding(idp, captureId);
  }

  /** Summary rows of responses that carried no tokens, on a relaxed commit (capture-events.ts). */
  async recordCaptureSummaries(summaries: readonly CaptureSummary[]): Promise<void> {
    await recordCaptureSummaries(this.pool, this.ring, summaries);
  }

  /**
   * Stores a login's tokens, merged by capture time as every capture is; inside the caller's
   * transaction (a refresh answer applied again after its first write failed uses it too).
   * True when nothing was stored because the user was erased after the capture was observed.
   */
  async upsertGrant(client: pg.PoolClient, capture: Capture): Promise<boolean> {
    return upsertGrant(client, this.ring, capture);
  }

  /** Opens a row read by other vault modules (refresh, revoke) inside their own transaction. */
  decrypt(row: OpenableGrantRow): GrantRecord {
    return decryptGrant(this.ring, row);
  }
}
