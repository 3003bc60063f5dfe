// The refresh-token policy runner, inside `serve`: every TOKEN_TAP_POLICY_INTERVAL (with jitter, so
// sidecars started together do not knock at once) it takes the policy lock (one run at a time across
// every sidecar on the database; the others skip that turn), and for each IdP with a
// refresh_token_policy acts on its grants that are due (policy/decide.ts), at most `maxPerIdp` per IdP
// and `maxPerRun` in all, the longest due first:
//  - rotate: a refresh through the vault's refresher, with its claims and fences
//    (operations/refresh.ts), so no refresh token is ever spent twice; a grant changed since it was
//    read (a login, another refresh) is skipped: it is fresh;
//  - expire: the revoker (operations/revoke.ts): RFC 7009 at the IdP when it has a revocation_url,
//    then the tokens erased and the grant marked revoked until the next login; judged again under
//    the grant's row lock, so a login meanwhile saves it.
// Each action is an access_events row (caller `policy`) and a count in token_tap_policy_actions_total:
// an expiry's is written in its transaction (committed with it, or neither is), a rotation's intent
// (`started`) before the IdP is called and its outcome after. One grant failing (its audit row
// refused, say) never ends the run for the others; Postgres away does. A grant whose action failed is
// left out for a back-off (policyRetryAfterMs), so grants that keep failing cannot take every run's
// budget; an expiry whose revocation the IdP refuses still erases in the vault (`revoke_failed`).
import type pg from 'pg';
import type { Logger } from 'pino';
import type { RefreshTokenPolicy } from '../config/refresh-token-policy.js';
import { describeError, errorCode, errorName } from '../lib/error-description.js';
import type { AccessEventLog, PolicyOutcome } from '../store/access-events.js';
import { isPostgresUnavailable, VaultError } from '../store/errors.js';
import type { GrantRow } from '../store/grant-reads.js';
import { databaseNow, dueGrants, markPolicyFailed, withPolicyLock } from '../store/policy-grants.js';
import { POLICY_CALLER } from '../store/refresh-token-report.js';
import { decide, factsOf, type PolicyDecision } from './decide.js';

export type PolicyAction = 'rotate' | 'expire';

export interface PolicyRunnerOptions {
  pool: pg.Pool;
  policies: ReadonlyMap<string, RefreshTokenPolicy>;
  refresher: {
    refresh(
      idp: string,
      subject: string,
      conditions: { arrivedAt: Date; waitUntil: number; refreshedByPolicy: true },
    ): Promise<{ refreshedByThisCall: boolean }>;
  };
  revoker: { revoke(idp: string, subject: string, options: RevokeOptions): Promise<unknown> };
  events: Pick<AccessEventLog, 'record' | 'recordIn'>;
  intervalMs: number;
  maxPerRun: number;
  maxPerIdp: number;
  onAction?: (idp: string, action: PolicyAction, outcome: string) => void;
  logger?: Logger;
  /** Jitter source (tests pin it). */
  random?: () => number;
}

/** What the revoker tells the audit (operations/revoke.ts RevokeDone). */
export interface RevokeDone {
  revokedAtIdp: boolean;
  skipped: boolean;
  idpFailure?: string;
}

/** What the runner asks of the revoker (operations/revoke.ts RevokeConditions). */
export interface RevokeOptions {
  onlyIf: (row: GrantRow, tx: pg.PoolClient) => Promise<boolean>;
  seenOnly: true;
  audit: (tx: pg.PoolClient, done: RevokeDone) => Promise<void>;
  eraseWhenIdpFails: true;
}

export interface RunSummary {
  /** False: another sidecar held the policy lock; nothing was done. */
  ran: boolean;
  actions: Array<{ idp: string; subject: string; action: PolicyAction; outcome: string }>;
}

/** How long a rotation waits for another holder's refresh of the same grant. */
const ROTATE_WAIT_MS = 30_000;

/** How long a grant whose action failed is left out: four intervals, at least an hour. */
export function policyRetryAfterMs(intervalMs: number): number {
  return Math.max(4 * intervalMs, 3_600_000);
}

/** Outcomes after which the grant is left as it was, and so backed off from. */
const SETTLED: ReadonlySet<string> = new Set(['ok', 'skipped', 'revoke_failed']);

export class PolicyRunner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly options: PolicyRunnerOptions) {}

  /** Starts the schedule; the first run comes after one jittered interval. */
  start(): void {
    if (this.options.policies.size === 0) return;
    this.options.logger?.info({ idps: [...this.options.policies.keys()], intervalMs: this.options.intervalMs }, 'refresh-token policy runner started');
    this.schedule();
  }

  /** Between 90 % and 110 % of the interval. */
  private schedule(): void {
    if (this.stopped) return;
    const delay = this.options.intervalMs * (0.9 + 0.2 * (this.options.random ?? Math.random)());
    this.timer = setTimeout(() => {
      this.running = this.runOnce()
        .catch((error: unknown) => this.options.logger?.warn({ err: describeError(error) }, 'refresh-token policy run failed; the next run tries again'))
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, delay);
    this.timer.unref();
  }

  /** Takes no new action and waits for the action in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One run, if the policy lock is free. */
  async runOnce(): Promise<RunSummary> {
    const actions: RunSummary['actions'] = [];
    const ran = await withPolicyLock(this.options.pool, async () => {
      for (const [idp, policy] of this.options.policies) {
        const budget = Math.min(this.options.maxPerIdp, this.options.maxPerRun - actions.length);
        if (budget <= 0 || this.stopped) break;
        const thresholds = { maxAgeMs: policy.maxAgeMs, idleMaxMs: policy.idleMaxMs, rotateEveryMs: policy.rotateEveryMs };
        const { now, rows } = await dueGrants(this.options.pool, idp, thresholds, budget, policyRetryAfterMs(this.options.intervalMs));
        for (const row of rows) {
          if (this.stopped) break;
          const decision = decide(factsOf(row), policy, now);
          if (!decision) continue;
          const outcome = await this.act(idp, row.subject, policy, decision, now);
          if (!SETTLED.has(outcome)) await this.backOff(idp, row.subject);
          actions.push({ idp, subject: row.subject, action: decision.action, outcome });
        }
      }
      return true;
    });
    return { ran: ran === true, actions };
  }

  /** Leaves a grant whose action failed out of the next runs for a while (store/policy-grants.ts dueGrants). */
  private async backOff(idp: string, subject: string): Promise<void> {
    await markPolicyFailed(this.options.pool, idp, subject).catch((error: unknown) => {
      if (isPostgresUnavailable(error)) throw error;
      this.options.logger?.warn({ idp, subject, err: describeError(error) }, 'cannot record the failed refresh-token policy action');
    });
  }

  private async act(idp: string, subject: string, policy: RefreshTokenPolicy, decision: NonNullable<PolicyDecision>, now: Date): Promise<string> {
    const { logger, events } = this.options;
    const rule = decision.action === 'expire' ? decision.reason : 'rotate_every';
    const event = (outcome: PolicyOutcome, detail: string) => ({ operation: decision.action, outcome, caller: POLICY_CALLER, idp, subject, detail });
    let outcome: PolicyOutcome;
    let detail: string;
    let recorded = false;
    try {
      if (decision.action === 'rotate') {
        // The intent first, committed: a crash while the IdP answers still leaves a row saying a refresh was under way.
        await events.record(event('started', 'rotate_every: refreshing'));
        const result = await this.options.refresher.refresh(idp, subject, { arrivedAt: now, waitUntil: Date.now() + ROTATE_WAIT_MS, refreshedByPolicy: true });
        outcome = result.refreshedByThisCall ? 'ok' : 'skipped';
        detail = result.refreshedByThisCall ? 'rotate_every: refreshed' : 'rotate_every: the grant changed since it was read; it is fresh';
      } else {
        const stillDue = async (row: GrantRow, tx: pg.PoolClient) => decide(factsOf(row), policy, await databaseNow(tx))?.action === 'expire';
        const expired = { outcome: 'ok' as PolicyOutcome, detail: '' };
        // The audit row in the revocation's transaction: an erasure is never without its row.
        const audit = async (tx: pg.PoolClient, done: RevokeDone) => {
          expired.outcome = done.skipped ? 'skipped' : done.idpFailure ? 'revoke_failed' : 'ok';
          expired.detail = expireDetail(decision.reason, done);
          await events.recordIn(tx, event(expired.outcome, expired.detail));
        };
        // Past max_age or idle_max the vault erases its copy even when the IdP refuses the revocation.
        await this.options.revoker.revoke(idp, subject, { onlyIf: stillDue, seenOnly: true, audit, eraseWhenIdpFails: true });
        recorded = true;
        ({ outcome, detail } = expired);
      }
    } catch (error) {
      // Postgres away: every grant would fail alike; the run ends and the next one tries again.
      if (!(error instanceof VaultError) && isPostgresUnavailable(error)) throw error;
      outcome = error instanceof VaultError ? error.outcome : 'internal';
      // Any other failure (its audit row refused, say) rolled its transaction back; the other grants go on.
      detail = `${rule}: ${error instanceof VaultError ? error.message : `failed (${errorCode(error) ?? errorName(error)}); nothing was changed in the vault`}`;
      logger?.warn(
        { idp, subject, action: decision.action, outcome, err: describeError(error) },
        'refresh-token policy action failed; the next run tries again',
      );
    }
    this.options.onAction?.(idp, decision.action, outcome);
    if (outcome === 'revoke_failed')
      logger?.warn({ idp, subject, reason: rule }, 'refresh-token policy erased a grant its IdP would not revoke; the token may still be alive there');
    if (outcome === 'ok')
      logger?.info(
        { idp, subject, action: decision.action, ...(decision.action === 'expire' ? { reason: decision.reason } : {}) },
        'refresh-token policy acted',
      );
    if (!recorded) {
      await events
        .record(event(outcome, detail))
        .catch((error: unknown) =>
          logger?.warn({ idp, subject, action: decision.action, err: describeError(error) }, 'cannot write the refresh-token policy audit row'),
        );
    }
    return outcome;
  }
}

function expireDetail(reason: string, done: RevokeDone): string {
  if (done.skipped) return `${reason}: not due any more when locked (a login meanwhile)`;
  if (done.idpFailure)
    return `${reason}: revocation at the IdP failed (${done.idpFailure}), erased anyway, grant revoked until the next login; the token may still be alive at the IdP`;
  return `${reason}: ${done.revokedAtIdp ? 'revoked at the IdP' : 'not revoked at the IdP (no revocation_url)'}, erased, grant revoked until the next login`;
}
