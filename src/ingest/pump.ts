// The capture path after the Exchange: each capture goes into the spool at once, and a single
// writer moves the spool into Postgres in order, one transaction per batch, committing the spool
// only after Postgres has committed. A batch that fails because Postgres is unavailable is retried
// (the same batch, so nothing is skipped) with capped exponential backoff and jitter, for as long
// as it takes; a capture that fails alone for any other reason is set aside in the quarantine
// (store/quarantine.ts), counted and logged, and the spool moves on past it.
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import type { IngestMetrics } from './metrics.js';
import { backoffMs } from '../lib/backoff.js';
import type { CaptureSpool, SpoolBatch } from './spool.js';
import { describeError, errorCode, errorName } from '../lib/error-description.js';
import { isPostgresUnavailable } from '../store/errors.js';
import type { RecordResult, SetAside } from '../store/grants.js';
import type { StoreState } from './postgres-availability.js';
import { sleep } from '../lib/abortable-wait.js';
import { ITEMS_PER_TURN, nextTurn } from '../lib/turns.js';
import { RecordedSummary } from './recorded-summary.js';

/** What the pump writes through (store/grants.ts's GrantStore). */
export interface CaptureWriter {
  /**
   * Writes the batch, and seals `setAside` into the quarantine, in one transaction. Captures that
   * fail alone are quarantined and returned; it throws only when nothing was written.
   */
  recordCaptures(batch: readonly Capture[], setAside?: readonly SetAside[]): Promise<RecordResult>;
}

/** What the verification step made of a batch (CaptureVerification's answer, plus captures it threw on). */
interface Verdict {
  captures?: Capture[];
  waiting?: Capture[];
  retryAt?: number;
  setAside?: SetAside[];
}

/**
 * A step between the spool and Postgres that may change captures (idp/verify.ts's CaptureVerifier
 * fits: id_tokens checked against the IdP's keys). It may ask for the batch again later: the batch
 * then stays in the spool, uncommitted, and nothing behind it is written before it.
 */
/** A sealed capture is a few KiB; room is checked with a margin before waiting ones are appended again. */
const RESPOOL_BYTES_PER_CAPTURE = 16 * 1024;

export interface CaptureVerification {
  /** `captures`: ready to write; `waiting`: to be asked about again at `retryAt`. */
  verify(batch: readonly Capture[]): Promise<{ captures?: Capture[]; waiting?: Capture[]; retryAt?: number }>;
}

export interface CapturePumpOptions {
  spool: CaptureSpool;
  writer: CaptureWriter;
  /** Run on each batch before it is written; without it, captures are written as spooled. */
  verification?: CaptureVerification;
  store: StoreState;
  logger: Logger;
  metrics: IngestMetrics;
  maxBatch?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /**
   * How long the writer lets captures gather after the first one arrives (default 20 ms). Each
   * batch costs four round trips and a checkpoint whatever its size; at 1,000 logins/s batches of
   * ~20 instead of ~5 cut the sidecar's CPU per capture (bench/RESULTS.md). A drain skips it.
   */
  gatherMs?: number;
}

/** Captures waitForIdp keeps track of at most (about 100 bytes each). */
const MAX_TRACKED = 100_000;

export class CapturePump {
  private readonly stop = new AbortController();
  /** Aborted to cut a backoff wait short (a drain wants one more try now). */
  private nap = new AbortController();
  /** stop or nap, made once per nap: AbortSignal.any per wait would pile up on the long-lived stop signal. */
  private wake = AbortSignal.any([this.stop.signal, this.nap.signal]);
  private running: Promise<void> | undefined;
  private failedAttempts = 0;
  private readonly maxBatch: number;
  /** This run's captures not yet written, by id: their IdP. Lets a reader wait for one IdP's (waitForIdp). */
  private readonly inFlight = new Map<string, string>();
  /** Per IdP: captures of this run enqueued, and written (or quarantined). The spool is in order, so written catches up in order. */
  private readonly enqueuedByIdp = new Map<string, number>();
  private readonly writtenByIdp = new Map<string, number>();
  private idpWaiters: Array<{ idp: string; target: number; resolve: (done: boolean) => void }> = [];

  /**
   * The "capture recorded" line, one per capture (debug; warn when unverified), carries only the
   * primitives named below, none of them secret; redaction (a second line of defence, ops/log.ts)
   * cost 30 µs of the ~35 µs of each such line, so this child of the logger does without it.
   */
  private readonly recordLogger: Logger;
  private readonly summary: RecordedSummary; // the info line: counts of captures recorded, every 10 s

  /** When Envoy saw the oldest capture of the batch being written (retried through an outage); undefined between batches. */
  private oldestPendingMs: number | undefined;

  constructor(private readonly options: CapturePumpOptions) {
    this.maxBatch = options.maxBatch ?? 200;
    this.recordLogger = options.logger.child({}, { redact: { paths: [] } });
    this.summary = new RecordedSummary(this.recordLogger);
    // The batch in hand holds the oldest capture not yet in Postgres: the spool is read in order.
    options.metrics.captureOldestWaitingSeconds.readWith(() =>
      this.oldestPendingMs === undefined ? 0 : Math.max(0, (Date.now() - this.oldestPendingMs) / 1000),
    );
  }

  /** Captures not yet in Postgres (in the spool, or waiting for its next fsync). */
  get depth(): number {
    return this.options.spool.depth;
  }

  /** Appends to the spool; false when the capture was dropped (counted and logged by the spool). */
  enqueue(capture: Capture): boolean {
    const appended = this.options.spool.append(capture);
    // Bounded: in a long outage tracking stops, and waitForIdp answers without waiting.
    if (appended && this.inFlight.size < MAX_TRACKED) {
      this.inFlight.set(capture.captureId, capture.idp);
      this.enqueuedByIdp.set(capture.idp, (this.enqueuedByIdp.get(capture.idp) ?? 0) + 1);
    }
    return appended;
  }

  /** Whether a capture of `idp` enqueued by this process has not reached Postgres yet. */
  hasInFlight(idp: string): boolean {
    return (this.enqueuedByIdp.get(idp) ?? 0) > (this.writtenByIdp.get(idp) ?? 0);
  }

  /**
   * Resolves true once every capture of `idp` enqueued before this call is in Postgres (or was
   * quarantined), false when `timeoutMs` is up first. The Okta hook waits here for a login
   * still in the spool.
   */
  waitForIdp(idp: string, timeoutMs: number): Promise<boolean> {
    const target = this.enqueuedByIdp.get(idp) ?? 0;
    if ((this.writtenByIdp.get(idp) ?? 0) >= target) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        idp,
        target,
        resolve: (done: boolean) => {
          clearTimeout(timer);
          resolve(done);
        },
      };
      const timer = setTimeout(() => {
        this.idpWaiters = this.idpWaiters.filter((other) => other !== waiter);
        resolve(false);
      }, timeoutMs);
      this.idpWaiters.push(waiter);
    });
  }

  private markWritten(captures: readonly Capture[]): void {
    for (const capture of captures) {
      const idp = this.inFlight.get(capture.captureId);
      if (idp === undefined) continue; // an earlier run's capture, replayed from the spool
      this.inFlight.delete(capture.captureId);
      this.writtenByIdp.set(idp, (this.writtenByIdp.get(idp) ?? 0) + 1);
    }
    if (this.idpWaiters.length === 0) return;
    const waiting: typeof this.idpWaiters = [];
    for (const waiter of this.idpWaiters) {
      if ((this.writtenByIdp.get(waiter.idp) ?? 0) >= waiter.target) waiter.resolve(true);
      else waiting.push(waiter);
    }
    this.idpWaiters = waiting;
  }

  /** Starts moving the spool into Postgres; what an earlier run left in the spool goes first. */
  start(): void {
    this.running ??= this.run();
  }

  /** Resolves true once everything enqueued is in Postgres, or false when `timeoutMs` is up. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    await this.options.spool.flush();
    this.nap.abort();
    return this.options.spool.waitUntilEmpty(Math.max(0, deadline - Date.now()));
  }

  /** Stops the writer after the batch in flight (if any) settles; the spool keeps the rest. */
  async close(): Promise<void> {
    this.stop.abort();
    this.nap.abort();
    // What is counted is said before the wait: a stop may not wait out a write stuck on a dead
    // Postgres (the sidecar's grace), and the counts must not go with it.
    this.summary.close();
    try {
      await this.running;
    } finally {
      this.summary.close();
    }
  }

  private async run(): Promise<void> {
    const { spool, store } = this.options;
    let pending: SpoolBatch | undefined;
    /** `pending` as verified, kept across write retries (a Postgres outage does not re-verify). */
    let ready: Capture[] | undefined;
    /** Captures of `pending` whose verification threw alone: quarantined with the batch. */
    let setAside: SetAside[] = [];
    while (!this.stop.signal.aborted) {
      if (store.condition === 'preparing' || store.condition === 'schema_too_new') {
        await store.whenReady(this.stop.signal);
        continue;
      }
      try {
        if (!pending) {
          pending = await spool.read(this.maxBatch);
          this.oldestPendingMs = pending?.captures.reduce((oldest, capture) => Math.min(oldest, capture.observedAt.getTime()), Number.POSITIVE_INFINITY);
          if (this.oldestPendingMs === Number.POSITIVE_INFINITY) this.oldestPendingMs = undefined;
        }
      } catch (error) {
        // A segment the disk will not give back (EIO, removed by hand): say so, and try again later.
        this.options.logger.error({ err: describeError(error), spool: spool.dir }, 'cannot read the capture spool; retrying');
        await this.backOff();
        continue;
      }
      if (!pending) {
        await spool.waitForRecords(this.stop.signal);
        await sleep(this.options.gatherMs ?? 20, this.wake);
        continue;
      }
      if (pending.captures.length > 0 && !ready) {
        const verdict = await this.verify(pending.captures);
        const waiting = verdict.waiting ?? [];
        // Keys one IdP has not given us yet must not hold up the others: its captures go back to
        // the end of the spool (durably, before this batch is committed) and the rest go on.
        const respooled = verdict.captures && waiting.length > 0 && (await this.respool(waiting));
        if (!verdict.captures || (waiting.length > 0 && !respooled)) {
          // Wait for the keys, not for a failure's backoff.
          await sleep(Math.max(50, (verdict.retryAt ?? 0) - Date.now()), this.wake);
          this.renewNap();
          continue;
        }
        ready = verdict.captures;
        setAside = verdict.setAside ?? [];
        // Only what waits is left: ask again when the keys may be there, not in a loop.
        if (ready.length === 0 && setAside.length === 0 && spool.depth <= pending.captures.length + waiting.length) {
          this.markWritten([]);
          await spool.commit(pending);
          pending = undefined;
          this.oldestPendingMs = undefined;
          ready = undefined;
          await sleep(Math.max(50, (verdict.retryAt ?? 0) - Date.now()), this.wake);
          this.renewNap();
          continue;
        }
      }
      if (pending.captures.length > 0 && !(await this.write(ready!, setAside))) {
        await this.backOff();
        continue;
      }
      this.failedAttempts = 0;
      // Captures appended again to wait for their keys are still on their way; quarantined ones
      // are as far as they will go.
      this.markWritten(ready ? [...ready, ...setAside.map((entry) => entry.capture)] : pending.captures);
      await spool.commit(pending);
      // An empty spool means nothing of this run is still on its way (a record the spool could not
      // open never arrives): the counts start level again, so no reader waits for it.
      if (spool.depth === 0 && this.inFlight.size > 0) {
        this.inFlight.clear();
        for (const [idp, count] of this.enqueuedByIdp) this.writtenByIdp.set(idp, count);
        this.markWritten([]);
      }
      pending = undefined;
      this.oldestPendingMs = undefined;
      ready = undefined;
      setAside = [];
    }
  }

  /**
   * Appends `captures` again, in one group commit; false when they could not all be (the batch
   * then stays as it is, uncommitted). Room for all of them is checked first, so a nearly full
   * spool is not filled with copies of one IdP's waiting captures.
   */
  private async respool(captures: readonly Capture[]): Promise<boolean> {
    const { spool } = this.options;
    if (!spool.hasRoomFor(captures.length * RESPOOL_BYTES_PER_CAPTURE)) return false;
    return spool.appendAllDurable(captures);
  }

  /**
   * The verification step's verdict. When it throws (a bug, not an IdP's answer), each capture is
   * verified alone: those that throw alone are set aside for the quarantine, the rest go on. A
   * record read from the spool (a replay included) is verified again, never trusted: what it says
   * of itself (`verified`) is dropped first, and only the step sets it. A refresh's answer keeps
   * its grant's flag, which the writer only ever ANDs with the stored one (store/grant-upsert.ts).
   */
  private async verify(spooled: Capture[]): Promise<Verdict> {
    const { verification, logger } = this.options;
    const captures = spooled.map((capture) => (capture.obtainedByRefresh || capture.verified === undefined ? capture : { ...capture, verified: undefined }));
    if (!verification) return { captures };
    try {
      return await verification.verify(captures);
    } catch (error) {
      logger.warn({ err: { name: errorName(error) }, batch: captures.length }, 'verifying a batch of captures failed; verifying them one at a time');
    }
    const verdict: Required<Verdict> = { captures: [], waiting: [], retryAt: Number.POSITIVE_INFINITY, setAside: [] };
    for (const capture of captures) {
      try {
        const alone = await verification.verify([capture]);
        // No answer for it yet: it waits (at the end of the spool) like a capture waiting for keys.
        verdict.captures.push(...(alone.captures ?? []));
        verdict.waiting.push(...(alone.captures ? (alone.waiting ?? []) : [capture]));
        if (alone.retryAt !== undefined) verdict.retryAt = Math.min(verdict.retryAt, alone.retryAt);
      } catch (error) {
        verdict.setAside.push({ capture, stage: 'verification', label: 'failed', reason: `verifying it failed (${errorName(error)})` });
      }
    }
    if (verdict.waiting.length === 0) return { captures: verdict.captures, setAside: verdict.setAside };
    return { ...verdict, retryAt: Number.isFinite(verdict.retryAt) ? verdict.retryAt : Date.now() + 1_000 };
  }

  private renewNap(): void {
    if (this.nap.signal.aborted) {
      this.nap = new AbortController();
      this.wake = AbortSignal.any([this.stop.signal, this.nap.signal]);
    }
  }

  private async backOff(): Promise<void> {
    this.failedAttempts += 1;
    this.renewNap();
    await sleep(backoffMs(this.failedAttempts, this.options.retryInitialMs ?? 100, this.options.retryMaxMs ?? 5_000), this.wake);
  }

  private async write(captures: readonly Capture[], setAside: readonly SetAside[]): Promise<boolean> {
    const { metrics, logger, store, writer } = this.options;
    const endTimer = metrics.writeBatchSeconds.startTimer();
    let result: RecordResult;
    try {
      result = await writer.recordCaptures(captures, setAside);
    } catch (error) {
      const context = { batch: captures.length, attempt: this.failedAttempts + 1, spooled: this.depth };
      if (isPostgresUnavailable(error)) {
        store.failed(error);
        logger.warn({ err: describeError(error), ...context }, 'writing captures to Postgres failed; they stay in the spool and the write is retried');
      } else {
        // Not an outage, and not one capture's fault either (the quarantine itself failed): Postgres
        // is up, so postgres_up stays as it is; the spool depth and this line show the stall. No
        // message: a refusal's message may quote a value.
        logger.error(
          { err: { name: errorName(error), code: errorCode(error) }, ...context },
          'writing captures failed, not for an outage, and the failing capture could not be quarantined; they stay in the spool and the write is retried',
        );
      }
      return false;
    }
    endTimer();
    store.succeeded();
    const { quarantined, heldUnreadable, erased } = result;
    const setApart = new Set(quarantined.map((entry) => entry.captureId));
    for (const entry of quarantined) {
      // A replayed spool meets a capture quarantined before: counted and logged once.
      if (entry.known) continue;
      metrics.capturesQuarantined.inc({ idp: entry.idp, reason: entry.label });
      logger.error(
        { idp: entry.idp, captureId: entry.captureId, reason: entry.label, detail: entry.reason },
        'capture quarantined: it cannot be written, and the captures behind it go on (token-tap captures quarantined / retry)',
      );
    }
    const unlinked = new Set((heldUnreadable ?? []).map((entry) => entry.captureId));
    const erasedIds = new Set(erased ?? []);
    for (const entry of heldUnreadable ?? []) {
      logger.warn(
        { idp: entry.idp, captureId: entry.captureId, keyId: entry.keyId },
        'profile names the user of a held grant sealed under a key this sidecar does not have (a key rollout in progress?): the grant stays held; add the key to TOKEN_TAP_KEYS on every sidecar first',
      );
    }
    const now = Date.now();
    for (const [index, capture] of captures.entries()) {
      // A line each, written synchronously: the event loop gets its turns between them.
      if (index > 0 && index % ITEMS_PER_TURN === 0) await nextTurn();
      if (setApart.has(capture.captureId)) continue;
      const outcome = erasedIds.has(capture.captureId) ? 'erased' : unlinked.has(capture.captureId) ? 'held_unreadable' : capture.outcome;
      metrics.captures.inc({ idp: capture.idp, outcome });
      if (outcome === 'stored') metrics.captureLastStored.set({ idp: capture.idp }, now / 1000);
      // Genuine tokens, most likely, whose IdP's keys could not be fetched in time: lost, so counted as such.
      if (capture.outcome === 'unverified' && capture.detail === 'jwks_unavailable') metrics.capturesDropped.inc({ reason: 'jwks_unavailable' });
      this.summary.note(capture.idp, outcome);
      // An id_token that did not verify may be a forgery: said louder than a normal capture.
      const level = capture.outcome === 'unverified' ? 'warn' : 'debug';
      this.recordLogger[level](
        {
          idp: capture.idp,
          captureId: capture.captureId,
          subject: capture.subject,
          outcome,
          verified: capture.verified === true,
          httpStatus: capture.httpStatus,
          errorCode: capture.errorCode,
          detail: capture.detail,
          durationMs: now - capture.observedAt.getTime(),
        },
        'capture recorded',
      );
    }
    this.summary.settle();
    return true;
  }
}
