// Refreshing a grant with its stored refresh token. IdPs that rotate refresh tokens accept each
// one once, and those with reuse detection (Okta, Auth0, oidc-provider) revoke the whole token
// family when one is presented again, so two refreshes of one grant must never spend the same token:
//  - in this process, callers that arrive while a refresh of the grant runs join it;
//  - across processes (several sidecars, the CLI), a refresh first claims the grant in a committed
//    row (store/refresh-claims.ts) and only then calls the IdP, with no transaction open. A caller
//    that finds another holder's live claim never calls the IdP: it waits, up to its deadline, for
//    the claim to end (or the grant to change) and then serves what the holder wrote, or answers
//    UNAVAILABLE. A row lock alone would not do: it ends with its connection (a failover, a
//    terminated backend, an idle-in-transaction timeout while the IdP is slow), and the IdP call
//    and the answer's outbox outlive it.
// Once the IdP has answered, its answer is the only copy of a rotated refresh token: never thrown
// away, even with a field over its bound (operations/refresh-answer.ts). It is sealed into the spool (the
// outbox) and fsynced, then written in one transaction with the claim's release; if that fails,
// this process writes it as soon as Postgres answers, ahead of the spool's backlog
// (operations/refresh-kept.ts), the pump applies the spooled copy, and a restarted sidecar replays it.
//
// When a claim may be taken over. A holder keeps its claim for the IdP's timeout_ms plus the apply
// window (TOKEN_TAP_REFRESH_APPLY_WINDOW_MS): the time its answer has to reach Postgres after the
// IdP call ends (the transaction, or the pump's retries, or a restart's replay). The holder calls
// the IdP only within the first half of the window after it claimed, and the call ends by
// timeout_ms. A claim whose grant has another refresh token than the one claimed has settled (the
// answer landed, or a login replaced the token): it is replaced at once. An expired claim whose
// refresh token is still the claimed one is taken over: its holder either never reached the IdP
// (the old token is still good), or got an answer that did not reach Postgres within the window.
// Only in that last case is the old token spent twice; an IdP with reuse detection then answers
// invalid_grant and the grant is marked revoked (a login makes it active again). After an outage
// every claim may have expired while its holder's answer waited: no expired claim is taken over
// until one apply window after Postgres came back (operations/refresh-takeover.ts). A holder whose
// claim was taken over writes a late answer merged by capture time, as the pump does: never over
// a newer refresh token, never over a revocation.
import os from 'node:os';
import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { stringClaim } from '../capture/jwt.js';
import { DEFAULT_REFRESH_APPLY_WINDOW_MS } from '../config/token-vault.js';
import type { Capture } from '../capture/types.js';
import { grantNotFound, isPostgresUnavailable, VaultError } from '../store/errors.js';
import { openGrant, rereadGrant, withLockedGrant } from '../store/grant-lock.js';
import { readClaim, releaseClaim, takeClaim, type RefreshClaim } from '../store/refresh-claims.js';
import { readRefreshAnswer, type RefreshAnswerField } from './refresh-answer.js';
import { clientFor, idpFailure, reportRefusedFields, revokedError, revokeUnused, setAsideError } from './refresh-refusals.js';
import { KeptAnswers, type KeptAnswer } from './refresh-kept.js';
import { TakeoverGate } from './refresh-takeover.js';
import { IdpCallError, type IdpClient, type IdpClients } from '../idp/client.js';
import { refusedStoredToken } from './refresh-invalid-grant.js';
import { waitForHolder } from './refresh-wait.js';
import { sleep } from '../lib/abortable-wait.js';
import type { GrantRecord, GrantRow, GrantStore } from '../store/grants.js';
import { describeError } from '../lib/error-description.js';

export interface RefreshResult {
  grant: GrantRecord;
  /** False when a change made after the caller arrived (another refresh, a new login) was served. */
  refreshedByThisCall: boolean;
}

export interface RefreshConditions {
  /** When the caller asked; a grant updated since then is already fresh. Default: now. */
  arrivedAt?: Date;
  /** Refresh only if the access token expires within this many ms (automatic refresh on read). */
  onlyIfExpiringWithinMs?: number;
  /** Epoch ms: the longest this caller waits for another holder's refresh (its deadline). */
  waitUntil?: number;
  /** The refresh-token policy's rotation: not a use of the grant (idle_max keeps counting). */
  refreshedByPolicy?: boolean;
}

export interface GrantRefresherOptions {
  pool: pg.Pool;
  store: GrantStore;
  clients: IdpClients;
  logger?: Logger;
  /** How long a caller waits for the grant's row lock (held only briefly: no IdP call runs under it). */
  lockTimeoutMs?: number;
  /** How long the IdP's answer may take to reach Postgres after the IdP call ends; a claim lasts timeout_ms plus this. */
  applyWindowMs?: number;
  /** The longest wait for another holder's refresh when the caller names no deadline. Default 30 s. */
  waitForOtherMs?: number;
  /** Between two looks at another holder's claim. Default 100 ms. */
  pollMs?: number;
  /** Called once per call to the IdP's token endpoint, with its outcome. */
  onUpstream?: (idp: string, outcome: 'ok' | 'invalid_grant' | 'refused' | 'unavailable') => void;
  /**
   * Makes a refreshed answer durable before it is applied (the sidecar's spool). Resolves false
   * when it could not (spool full or closed); the refresh then goes on without that safety net,
   * logged. Undefined (the CLI): applied in the transaction alone.
   */
  outbox?: (refreshed: Capture) => Promise<boolean>;
  /** Whether the outbox can take an answer now; when it cannot, the IdP is not called (UNAVAILABLE). */
  outboxReady?: () => boolean;
  /** Fault injection for tests: runs after the answer is durable, in the transaction that writes it. */
  afterAnswerDurable?: (tx: pg.PoolClient) => Promise<void>;
  /** Refreshes of different grants running at once (IdP calls in flight); the rest queue. */
  maxConcurrent?: number;
  /** Epoch ms when the capture writer (its own pool) last reached Postgres again after an outage (StoreState). */
  postgresRegainedAt?: () => number | undefined;
  /** Called once per field of an IdP answer over its bound: dropped (the grant keeps its own) or set aside (a token: the whole answer quarantined). */
  onFieldRefused?: (idp: string, field: RefreshAnswerField, action: 'dropped' | 'set_aside') => void;
  /** invalid_grant at an IdP seen rotating refresh tokens (refresh-invalid-grant.ts). */
  onFamilyRevoked?: (idp: string) => void;
  /** Backoff of writing kept answers while Postgres is away; tests shorten it. */
  keptRetryMs?: { initial: number; max: number };
}

/** A kept answer written in the attempt's transaction (forgotten once that commits): its result, or why not. */
type KeptApplied = { applied: KeptAnswer; result?: RefreshResult; refusal?: VaultError };

type Attempt = { kind: 'done'; result: RefreshResult } | { kind: 'wait'; claim: RefreshClaim; version: number; takeoverAfter?: number };

/** A claim this process holds, committed: the IdP may be called. */
interface Claimed {
  grant: GrantRecord;
  client: IdpClient;
  claimId: string;
  /** performance.now() before the claim's transaction began. */
  startedAt: number;
  byPolicy: boolean;
}

export class GrantRefresher {
  /** Names this process in its claims: hostname/pid/random (a restarted process is another holder). */
  readonly holder = `${os.hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  private readonly running = new Map<string, Promise<RefreshResult>>();
  /**
   * Answers spooled whose own transaction failed, with the claim they were obtained under. A caller
   * retrying at once must not call the IdP with the refresh token it already spent (invalid_grant
   * would revoke the grant): the next refresh of that grant here applies the kept answer instead,
   * and they are written in the background as soon as Postgres answers.
   */
  private readonly kept: KeptAnswers;
  private readonly gate: TakeoverGate;
  /** Claimed refreshes past their claim (at the IdP or writing its answer), by claim id: their IdP. */
  private readonly spending = new Map<string, string>();
  private readonly stopping = new AbortController();
  private policyRefused = false;
  private active = 0;
  private readonly queued: Array<() => void> = [];

  constructor(private readonly options: GrantRefresherOptions) {
    this.gate = new TakeoverGate(this.applyWindowMs, options.postgresRegainedAt, options.logger);
    const { pool, store, logger, keptRetryMs } = options;
    this.kept = new KeptAnswers({ pool, store, logger, lockTimeoutMs: this.lockTimeoutMs, gate: this.gate, stopping: this.stopping.signal, retry: keptRetryMs });
  }

  private get lockTimeoutMs(): number {
    return this.options.lockTimeoutMs ?? 30_000;
  }

  /** Postgres could not be reached outside a refresh (an idle connection of the refresher's pool failed). */
  postgresLost(): void {
    this.gate.lost();
  }

  private get applyWindowMs(): number {
    return this.options.applyWindowMs ?? DEFAULT_REFRESH_APPLY_WINDOW_MS;
  }

  refresh(idp: string, subject: string, conditions: RefreshConditions = {}): Promise<RefreshResult> {
    const key = JSON.stringify([idp, subject]);
    const running = this.running.get(key);
    if (running) return running.then((result) => ({ ...result, refreshedByThisCall: false }));
    const arrived = { arrivedAt: new Date(), ...conditions };
    const started = this.refreshOrWait(idp, subject, arrived)
      .catch((error: unknown) => {
        this.gate.failed(error);
        throw error;
      })
      .finally(() => this.running.delete(key));
    this.running.set(key, started);
    return started;
  }

  /** The IdP of each claimed refresh in flight (at its IdP, or writing its answer). */
  inFlight(): string[] {
    return [...this.spending.values()];
  }

  /**
   * Stops taking refreshes (callers waiting on another holder are answered UNAVAILABLE at once)
   * and waits up to `graceMs` for those already claimed: cutting one after the IdP answered would
   * leave its rotated token only in the spool, or nowhere if the spool is closed. Returns the IdP
   * of each refresh still in flight at the end.
   */
  async drain(graceMs: number): Promise<string[]> {
    this.stopping.abort();
    const until = Date.now() + graceMs;
    // Not on `stopping`: it is aborted already, and this wait is for what it stopped.
    while (this.spending.size > 0 && Date.now() < until) await sleep(Math.min(25, until - Date.now()));
    return this.inFlight();
  }

  /** The sidecar began to stop: the policy's rotations are refused from now on, callers' go on until drain(). */
  refusePolicyWork(): void { this.policyRefused = true; }

  private refuseWhenStopping(byPolicy = false): void {
    if (this.stopping.signal.aborted || (byPolicy && this.policyRefused)) throw new VaultError('the sidecar is stopping and takes no new refresh; try again (another sidecar)', 'unavailable');
  }

  private async refreshOrWait(idp: string, subject: string, conditions: RefreshConditions & { arrivedAt: Date }): Promise<RefreshResult> {
    const waitUntil = conditions.waitUntil ?? Date.now() + (this.options.waitForOtherMs ?? 30_000);
    for (;;) {
      const attempt = await this.withSlot(() => (this.refuseWhenStopping(conditions.refreshedByPolicy), this.attempt(idp, subject, conditions)));
      if (attempt.kind === 'done') return attempt.result;
      await waitForHolder({ pool: this.options.pool, idp, subject, ...attempt, waitUntil, pollMs: this.options.pollMs ?? 100, stopping: this.stopping.signal, logger: this.options.logger });
    }
  }

  /** Runs `work` when fewer than maxConcurrent refreshes run; a finishing one hands its slot on. */
  private async withSlot<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= Math.max(1, this.options.maxConcurrent ?? 2)) await new Promise<void>((resolve) => this.queued.push(resolve));
    else this.active += 1;
    try {
      return await work();
    } finally {
      const next = this.queued.shift();
      if (next) next();
      else this.active -= 1;
    }
  }

  /** Under the row lock: serve, wait for another holder, or claim the grant (committed); then spend. */
  private async attempt(idp: string, subject: string, conditions: RefreshConditions & { arrivedAt: Date }): Promise<Attempt> {
    const { pool, store, logger } = this.options;
    const startedAt = performance.now();
    const claimId = randomUUID();
    const kept = this.kept.get(idp, subject);
    const decided = await withLockedGrant(pool, idp, subject, this.lockTimeoutMs, async (tx, row): Promise<Attempt | Claimed | KeptApplied> => {
      this.gate.reached();
      if (!row) throw grantNotFound(idp, subject);
      const grant = openGrant(store, row);
      if (grant.status === 'revoked') throw revokedError(idp, subject);
      const applied = kept && (await this.applyKept(tx, row, kept));
      if (applied) return applied;
      if (row.updated_at >= conditions.arrivedAt) return { kind: 'done', result: { grant, refreshedByThisCall: false } };
      const expiresAt = grant.accessTokenExpiresAt?.getTime();
      if (conditions.onlyIfExpiringWithinMs !== undefined && expiresAt !== undefined && expiresAt - Date.now() > conditions.onlyIfExpiringWithinMs) {
        return { kind: 'done', result: { grant, refreshedByThisCall: false } };
      }
      const claim = await readClaim(tx, idp, subject);
      const verdict = this.gate.judge(claim, this.holder, { idp, subject });
      if (claim && verdict.wait) return { kind: 'wait', claim, version: row.version, takeoverAfter: verdict.takeoverAfter };
      const client = clientFor(this.options.clients, grant);
      // Calling the IdP spends the stored refresh token: only when its answer can be kept.
      if (this.options.outboxReady && !this.options.outboxReady()) {
        throw new VaultError('the sidecar cannot keep a refresh answer durably right now (its spool is full or closing); try again later', 'unavailable');
      }
      if (claim && verdict.takingOver) {
        logger?.warn(
          { idp, subject, holder: claim.holder, claimedAt: claim.claimedAt, expiredAt: claim.expiresAt },
          "taking over an expired refresh claim: its holder wrote no answer within the IdP timeout plus the apply window, and the grant's refresh token is still the one it claimed",
        );
      }
      await takeClaim(tx, { idp, subject, claimId, holder: this.holder, holdMs: client.settings.timeoutMs + this.applyWindowMs });
      return { grant, client, claimId, startedAt, byPolicy: conditions.refreshedByPolicy === true };
    });
    if ('applied' in decided) {
      // Committed: the kept answer is in Postgres (or set aside, or stale) and no longer ours to keep.
      this.kept.forget(idp, subject, decided.applied);
      if (decided.refusal) throw decided.refusal;
      return { kind: 'done', result: decided.result! };
    }
    if ('kind' in decided) return decided;
    return { kind: 'done', result: await this.spend(idp, subject, decided) };
  }

  /**
   * A kept answer (its first write failed) not yet in Postgres is applied instead of calling the
   * IdP (refresh-kept.ts: merged by capture time, or set aside). One already stored (the pump
   * applied it, or a login brought a newer refresh token), or one that rotated nothing, is
   * forgotten: the normal checks decide, and the IdP may be called.
   */
  private async applyKept(tx: pg.PoolClient, row: GrantRow, kept: KeptAnswer): Promise<KeptApplied | undefined> {
    const { idp, subject } = row;
    const outcome = await this.kept.writeIn(tx, row, kept).catch((error: unknown) => {
      // It fails for itself, not for an outage (a value over a limit, say): it will not be written
      // here, so it must not block the grant's refreshes; the pump quarantines its spooled copy.
      if (!isPostgresUnavailable(error)) this.kept.forget(idp, subject, kept);
      throw error;
    });
    if (outcome === 'stale') {
      this.kept.forget(idp, subject, kept);
      return undefined;
    }
    if (outcome === 'set_aside') return { applied: kept, refusal: setAsideError(idp, subject, kept) };
    this.options.logger?.info({ idp, subject, captureId: kept.capture.captureId }, 'applied a refresh answer whose first write failed, without calling the IdP again');
    return { applied: kept, result: { grant: openGrant(this.options.store, await rereadGrant(tx, idp, subject)), refreshedByThisCall: true } };
  }

  /** The claim is committed: call the IdP (no transaction open), spool its answer, write it. */
  private async spend(idp: string, subject: string, claimed: Claimed): Promise<RefreshResult> {
    const { logger, onUpstream } = this.options;
    const { grant, client, claimId } = claimed;
    this.spending.set(claimId, idp);
    try {
      // Past half the apply window another holder may soon take the claim over (a pause, a slow
      // commit): the IdP is called only well inside the claim, and never once stopping began.
      if (this.stopping.signal.aborted || (claimed.byPolicy && this.policyRefused) || performance.now() - claimed.startedAt > this.applyWindowMs / 2) {
        await this.release(idp, subject, claimId);
        this.refuseWhenStopping(claimed.byPolicy);
        throw new VaultError(`claiming grant (${idp}, ${subject}) took too long to call the IdP safely; try again`, 'unavailable');
      }
      const requestedAt = new Date();
      let tokens: Awaited<ReturnType<typeof client.refresh>>;
      try {
        tokens = await client.refresh(grant.refreshToken!, grant.issuer ?? undefined);
      } catch (error) {
        if (!(error instanceof IdpCallError)) {
          await this.release(idp, subject, claimId);
          throw error;
        }
        if (error.errorCode === 'invalid_grant') {
          onUpstream?.(idp, 'invalid_grant');
          throw await refusedStoredToken({ pool: this.options.pool, lockTimeoutMs: this.lockTimeoutMs, logger, onFamilyRevoked: this.options.onFamilyRevoked }, idp, subject, claimId);
        }
        onUpstream?.(idp, error.kind === 'unavailable' ? 'unavailable' : 'refused');
        await this.release(idp, subject, claimId);
        throw idpFailure(idp, error);
      }
      onUpstream?.(idp, 'ok');
      // OIDC Core 12.2: a refreshed id_token names the same user. Another sub means the IdP (or
      // whoever answers at its token URL) mixed up grants: nothing is stored. (An id_token whose
      // claims cannot be read names no one: it is dropped with the fields over their bounds.)
      const claims = tokens.idToken ? tokens.claims : undefined;
      if (claims && stringClaim(claims, 'sub') !== subject) {
        await this.release(idp, subject, claimId);
        logger?.error({ idp, subject }, 'IdP answered the refresh with an id_token for another subject; nothing stored (OIDC Core 12.2)');
        throw new VaultError(`IdP "${idp}" answered the refresh of (${idp}, ${subject}) with an id_token for another subject; the stored grant is unchanged`, 'failed_precondition');
      }
      const answer = readRefreshAnswer({ captureId: randomUUID(), idp, subject, requestedAt, tokens, stored: { tokenType: grant.tokenType, extras: grant.extras, verified: grant.verified } });
      reportRefusedFields({ idp, subject, logger, onFieldRefused: this.options.onFieldRefused }, answer);
      const refreshed = claimed.byPolicy ? { ...answer.capture, refreshedByPolicy: true } : answer.capture;
      if (this.options.outbox && !(await this.options.outbox(refreshed))) {
        logger?.warn({ idp, subject, captureId: refreshed.captureId }, 'the refreshed tokens could not be spooled first (spool full or closing); applying them directly');
      }
      const setAside = answer.kind === 'set_aside' ? { detail: answer.refused[0]!.detail, quarantineId: randomUUID() } : undefined;
      const kept: KeptAnswer = { capture: refreshed, claimId, ...(setAside ? { setAside } : {}) };
      this.kept.keep(idp, subject, kept);
      try {
        const result = await this.apply(idp, subject, kept, client);
        this.kept.forget(idp, subject, kept);
        return result;
      } catch (error) {
        // Not written: kept here, and written as soon as Postgres answers, ahead of the spool's backlog.
        if (this.kept.has(idp, subject, kept)) this.kept.writeSoon();
        throw error;
      }
    } finally {
      this.spending.delete(claimId);
    }
  }

  /**
   * Writes the answer and releases the claim in one transaction. While the claim is this attempt's
   * and the grant's refresh token is still the claimed one, the answer wins outright; otherwise
   * (taken over after expiry, a login meanwhile) it is merged by capture time, as the pump merges
   * the spooled copy. A grant revoked or deleted while the IdP answered stays so.
   */
  private async apply(idp: string, subject: string, kept: KeptAnswer, client: IdpClient): Promise<RefreshResult> {
    const { store, logger } = this.options;
    const { capture: refreshed, claimId } = kept;
    const outcome = await withLockedGrant(this.options.pool, idp, subject, this.lockTimeoutMs, async (tx, row) => {
      await this.options.afterAnswerDurable?.(tx);
      if (!row) return 'deleted' as const;
      const claim = await readClaim(tx, idp, subject);
      const own = claim?.claimId === claimId;
      if (row.status === 'revoked') {
        if (own) await releaseClaim(tx, idp, subject, claimId);
        return 'revoked' as const;
      }
      // A token over its bound: into the quarantine, unless its spooled copy was written first.
      if (kept.setAside) {
        if ((await this.kept.writeIn(tx, row, kept)) === 'set_aside') return 'set_aside' as const;
        if (own) await releaseClaim(tx, idp, subject, claimId);
        return { grant: openGrant(store, await rereadGrant(tx, idp, subject)), refreshedByThisCall: true };
      }
      if (own) await releaseClaim(tx, idp, subject, claimId);
      if (own && !claim.settled) await store.writeObtainedTokens(tx, refreshed);
      else {
        logger?.warn({ idp, subject, holder: claim?.holder }, 'the refresh claim was taken over or its refresh token replaced while the IdP answered; the answer is merged by capture time');
        await store.upsertGrant(tx, refreshed);
      }
      return { grant: openGrant(store, await rereadGrant(tx, idp, subject)), refreshedByThisCall: true };
    });
    if (typeof outcome !== 'string') return outcome;
    this.kept.forget(idp, subject, kept);
    if (outcome === 'set_aside') throw setAsideError(idp, subject, kept);
    await revokeUnused(client, refreshed, logger);
    throw outcome === 'deleted' ? grantNotFound(idp, subject) : revokedError(idp, subject, 'it was revoked while the IdP answered the refresh');
  }

  /** Ends this attempt's claim; if Postgres cannot be reached it expires on its own. */
  private async release(idp: string, subject: string, claimId: string): Promise<void> {
    await releaseClaim(this.options.pool, idp, subject, claimId).catch((error: unknown) => {
      this.options.logger?.warn({ idp, subject, err: describeError(error) }, 'could not release a refresh claim; it expires on its own');
    });
  }
}
