// Refresh answers this process holds whose first write failed (the rules: operations/refresh.ts). Each is
// in the spool too (the outbox), but there it waits behind every capture spooled before it, which
// after an outage may be minutes of backlog, while another sidecar waits for the claim to expire.
// So they are written from here directly, in a transaction of their own, as soon as Postgres answers
// again (retried with backoff), and a refresh of the grant meanwhile applies its kept answer instead
// of calling the IdP with the refresh token it already spent. The spooled copy, met later, changes
// nothing newer.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import { backoffMs } from '../lib/backoff.js';
import { sleep } from '../lib/abortable-wait.js';
import { isPostgresUnavailable, VaultError } from '../store/errors.js';
import { withLockedGrant } from '../store/grant-lock.js';
import { readClaim, releaseClaim, retireSpentRefreshToken } from '../store/refresh-claims.js';
import type { GrantRow, GrantStore } from '../store/grants.js';
import type { TakeoverGate } from './refresh-takeover.js';
import { errorCode, errorName } from '../lib/error-description.js';

export interface KeptAnswer {
  capture: Capture;
  /** The claim the answer was obtained under. */
  claimId: string;
  /** A token over its bound (operations/refresh-answer.ts): the answer goes to the quarantine, not the grant. */
  setAside?: { detail: string; quarantineId: string };
}

/**
 * What writing a kept answer did: `stale`, it (or a newer refresh token) is stored already, or it
 * rotated nothing; `written` into the grant; `set_aside` into the quarantine, the spent refresh
 * token removed from the grant if the claim was still this answer's.
 */
export type KeptWrite = 'stale' | 'written' | 'set_aside';

export interface KeptAnswersOptions {
  pool: pg.Pool;
  store: GrantStore;
  logger: Logger | undefined;
  lockTimeoutMs: number;
  gate: TakeoverGate;
  stopping: AbortSignal;
  /** Backoff of the background writes while Postgres is away. Default 100 ms, at most 2 s. */
  retry?: { initial: number; max: number } | undefined;
}

const keyOf = (idp: string, subject: string) => JSON.stringify([idp, subject]);

/** Worth trying again later: Postgres away, or the grant's row lock busy. */
function retryable(error: unknown): boolean {
  return isPostgresUnavailable(error) || (error instanceof VaultError && error.outcome === 'unavailable');
}

export class KeptAnswers {
  private readonly byGrant = new Map<string, KeptAnswer>();
  private writer: Promise<void> | undefined;

  constructor(private readonly options: KeptAnswersOptions) {}

  get size(): number {
    return this.byGrant.size;
  }

  get(idp: string, subject: string): KeptAnswer | undefined {
    return this.byGrant.get(keyOf(idp, subject));
  }

  keep(idp: string, subject: string, answer: KeptAnswer): void {
    this.byGrant.set(keyOf(idp, subject), answer);
  }

  /** Forgets `answer` if it is still the one kept for its grant (a newer one stays). */
  forget(idp: string, subject: string, answer: KeptAnswer): void {
    if (this.byGrant.get(keyOf(idp, subject)) === answer) this.byGrant.delete(keyOf(idp, subject));
  }

  has(idp: string, subject: string, answer: KeptAnswer): boolean {
    return this.byGrant.get(keyOf(idp, subject)) === answer;
  }

  /**
   * Writes `answer` inside the caller's transaction, which holds the grant's row lock (`row`), merged
   * by capture time as the pump would write its spooled copy (a newer refresh token, another
   * sidecar's, stays), and releases its claim. Throws as the write does; the caller forgets the
   * answer unless that was an outage.
   */
  async writeIn(tx: pg.PoolClient, row: GrantRow, answer: KeptAnswer): Promise<KeptWrite> {
    const { capture, claimId, setAside } = answer;
    const rotated = capture.tokens?.refreshToken !== undefined;
    if ((!rotated && !setAside) || (rotated && row.refresh_token_observed_at !== null && row.refresh_token_observed_at >= capture.observedAt)) return 'stale';
    if (!setAside) {
      await this.options.store.upsertGrant(tx, capture);
      await releaseClaim(tx, row.idp, row.subject, claimId);
      return 'written';
    }
    const claim = await readClaim(tx, row.idp, row.subject);
    await this.options.store.setAsideRefreshAnswer(tx, capture, setAside.quarantineId, `refresh answer with ${setAside.detail}`);
    // The stored refresh token is the one this answer's request spent: no one may present it again.
    if (rotated && claim?.claimId === claimId && !claim.settled) await retireSpentRefreshToken(tx, row.idp, row.subject);
    await releaseClaim(tx, row.idp, row.subject, claimId);
    return 'set_aside';
  }

  /** The sidecar is stopping, or the pool was ended (the CLI is done): no background writes. */
  private get closed(): boolean {
    return this.options.stopping.aborted || (this.options.pool as { ending?: boolean }).ending === true;
  }

  /** Writes every kept answer in the background, each in its own transaction, until none is left. */
  writeSoon(): void {
    if (this.writer || this.closed || this.byGrant.size === 0) return;
    this.writer = this.writeAll().finally(() => {
      this.writer = undefined;
      // One kept while the last pass was ending.
      this.writeSoon();
    });
  }

  private async writeAll(): Promise<void> {
    const { pool, logger, lockTimeoutMs, gate, stopping } = this.options;
    for (let attempt = 1; this.byGrant.size > 0 && !this.closed; attempt += 1) {
      await sleep(backoffMs(attempt, this.options.retry?.initial ?? 100, this.options.retry?.max ?? 2_000), stopping, { unref: true });
      for (const [key, answer] of [...this.byGrant]) {
        if (this.closed) return;
        const [idp, subject] = JSON.parse(key) as [string, string];
        try {
          const outcome = await withLockedGrant(pool, idp, subject, lockTimeoutMs, async (tx, row) => {
            gate.reached();
            return row ? this.writeIn(tx, row, answer) : ('gone' as const);
          });
          this.forget(idp, subject, answer);
          if (outcome === 'written' || outcome === 'set_aside') {
            logger?.info(
              { idp, subject, captureId: answer.capture.captureId, outcome },
              'wrote a kept refresh answer as soon as Postgres answered again, ahead of the spool',
            );
          }
        } catch (error) {
          gate.failed(error);
          if (retryable(error)) break;
          // It fails for itself, not for an outage: the pump meets its spooled copy (and quarantines it if it fails there too).
          this.forget(idp, subject, answer);
          logger?.warn(
            { idp, subject, captureId: answer.capture.captureId, err: { name: errorName(error), code: errorCode(error) } },
            'a kept refresh answer could not be written; its spooled copy is left to the pump',
          );
        }
      }
    }
  }
}
