// When an expired refresh claim of another holder may be taken over (the rules: operations/refresh.ts).
// A claim expires on Postgres's clock even while Postgres is away: after an outage or a failover
// longer than the IdP timeout plus the apply window, every claim taken before it has expired, and
// its holder's answer may still be in that holder's spool, behind the outage's backlog (or in its
// memory, to be written as soon as it reaches Postgres again). Taking such a claim over at once
// would spend the old refresh token a second time. So no expired claim is taken over until one
// apply window has passed since Postgres came back, as far as this process can tell:
//  - Postgres restarted (or recovered from a crash): its postmaster start time, read with the claim,
//    so every sidecar agrees, whatever it saw of the outage;
//  - this process could not reach it (a failover, a partition, a restart it saw): the latest time
//    it reached Postgres again after failing to, through its own pool (the refresher's operations,
//    the pool's idle connections failing) or another's (the capture writer's StoreState).
import type { Logger } from 'pino';
import { isPostgresUnavailable } from '../store/errors.js';
import type { RefreshClaim } from '../store/refresh-claims.js';

export class TakeoverGate {
  private unreachable = false;
  private regainedAt: number | undefined;

  constructor(
    private readonly applyWindowMs: number,
    /** Epoch ms when another part of the process last regained Postgres (the capture writer's StoreState). */
    private readonly elsewhereRegainedAt: () => number | undefined = () => undefined,
    private readonly logger?: Logger,
  ) {}

  /** An operation on Postgres failed; only an outage counts. */
  failed(error: unknown): void {
    if (isPostgresUnavailable(error)) this.lost();
  }

  /** Postgres could not be reached (an idle connection of the pool failed, say). */
  lost(): void {
    this.unreachable = true;
  }

  /** Postgres answered. */
  reached(now = Date.now()): void {
    if (!this.unreachable) return;
    this.unreachable = false;
    this.regainedAt = now;
  }

  /** Epoch ms of the latest return of Postgres this process knows of; undefined if none. */
  lastRegainedAt(claim?: RefreshClaim, now = Date.now()): number | undefined {
    const times = [this.regainedAt, this.elsewhereRegainedAt(), claim ? now - claim.postgresUpMs : undefined].filter((time) => time !== undefined);
    return times.length > 0 ? Math.max(...times) : undefined;
  }

  /**
   * What a refresh does about the grant's claim: wait for its holder (a live claim of another, or an
   * expired one held off until `takeoverAfter`), or claim the grant itself, taking an expired claim
   * of another over (`takingOver`). Our own leftover claim (an earlier attempt here that could not
   * release it) and a settled one are ours to replace.
   */
  judge(
    claim: RefreshClaim | undefined,
    holder: string,
    grant: { idp: string; subject: string },
    now = Date.now(),
  ): { wait: boolean; takeoverAfter?: number; takingOver: boolean } {
    if (!claim || claim.holder === holder || claim.settled) return { wait: false, takingOver: false };
    if (!claim.expired) return { wait: true, takingOver: false };
    const takeoverAfter = this.heldOffUntil(claim, now);
    if (takeoverAfter === undefined) return { wait: false, takingOver: true };
    this.logger?.warn(
      { ...grant, holder: claim.holder, expiredAt: claim.expiresAt, takeoverAfter: new Date(takeoverAfter) },
      'not taking over an expired refresh claim yet: Postgres came back less than the apply window ago, and its holder may still write its answer',
    );
    return { wait: true, takeoverAfter, takingOver: false };
  }

  /**
   * For an expired claim of another holder: undefined when it may be taken over now, else the epoch
   * ms from which it may (one apply window after Postgres came back).
   */
  heldOffUntil(claim: RefreshClaim, now = Date.now()): number | undefined {
    const regained = this.lastRegainedAt(claim, now);
    if (regained === undefined) return undefined;
    const until = regained + this.applyWindowMs;
    return now < until ? until : undefined;
  }
}
