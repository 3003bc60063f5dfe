// Retrying quarantined captures: each opened with the key ring and written as the sidecar's writer
// would, one per transaction (the rows: store/quarantine.ts; their records: ingest/quarantine.ts).
// A capture quarantined before verification ran is verified first, as the sidecar would, with the
// IdPs it verifies; without them it stays: writing it unverified would skip a check the sidecar makes.
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import { CaptureVerifier, type IdpVerificationSettings } from '../idp/verify.js';
import { openQuarantined } from '../ingest/quarantine.js';
import { errorName } from '../lib/error-description.js';
import { TokenTapError } from '../lib/errors.js';
import { describeCaptureFailure, isPostgresUnavailable } from '../store/errors.js';
import type { GrantStore } from '../store/grants.js';
import { withTransaction } from '../store/pool.js';
import { deleteQuarantined, listQuarantined, lockQuarantined, noteFailedRetry } from '../store/quarantine.js';
import { HOLD_OFF_ERASURES } from '../store/tombstones.js';

export type RetryVerify = (capture: Capture) => Promise<Capture | { notYet: string }>;

/** What a retry did with one quarantined capture. */
export type RetryOutcome =
  | { captureId: string; result: 'written' }
  /** Its user was erased after it was observed: dropped by the writer (recorded `erased`), no grant. */
  | { captureId: string; result: 'erased' }
  | { captureId: string; result: 'stayed'; reason: string; attempts: number }
  | { captureId: string; result: 'gone' };

export interface RetryDependencies {
  pool: pg.Pool;
  ring: KeyRing;
  /** Writes one capture inside the transaction (GrantStore.writeCaptureIn): erased, when the writer dropped it for a tombstone. */
  write: (client: pg.PoolClient, capture: Capture) => Promise<{ erased: boolean }>;
  /**
   * Verifies a capture quarantined before verification ran, as the pump would have; returns the
   * capture to write, or why it cannot be yet. Throws as the verification step does.
   */
  verify: RetryVerify;
}

/** Thrown inside the retry transaction to keep the capture quarantined with a reason of our own. */
class Stays extends TokenTapError {
  constructor(readonly reason: string) {
    super(reason, 'failed_precondition');
  }
}

/**
 * Writes a quarantined capture again, in one transaction: written, its quarantine row is deleted
 * in that transaction; failed, the row stays with attempts + 1 and the new reason. Postgres being
 * unavailable throws (nothing changes). A row another retry holds, or one already gone: 'gone'.
 */
export async function retryQuarantined(captureId: string, deps: RetryDependencies): Promise<RetryOutcome> {
  return withTransaction(
    deps.pool,
    async (client) => {
      const row = await lockQuarantined(client, captureId);
      if (!row) return { captureId, result: 'gone' };
      await client.query('SAVEPOINT retry');
      try {
        let capture: Capture;
        try {
          capture = openQuarantined(deps.ring, row.keyId, row.record, row.captureId);
        } catch (error) {
          throw new Stays(`cannot open the quarantined record (${errorName(error)})`);
        }
        if (row.stage === 'verification') {
          let verified: Capture | { notYet: string };
          try {
            verified = await deps.verify(capture);
          } catch (error) {
            throw new Stays(`verifying it failed (${errorName(error)})`);
          }
          if ('notYet' in verified) throw new Stays(verified.notYet);
          capture = verified;
        }
        // Through the writer: a capture of a user erased after it was observed is dropped there.
        const { erased } = await deps.write(client, capture);
        await deleteQuarantined(client, captureId);
        return { captureId, result: erased ? 'erased' : 'written' };
      } catch (error) {
        if (isPostgresUnavailable(error)) throw error;
        await client.query('ROLLBACK TO SAVEPOINT retry');
        const { reason, attempts } = await noteFailedRetry(client, captureId, error instanceof Stays ? error.reason : describeCaptureFailure(error).reason);
        return { captureId, result: 'stayed', reason, attempts };
      }
      // As a capture batch: no erasure commits between its tombstone check and its commit.
    },
    { opening: [HOLD_OFF_ERASURES] },
  );
}

/**
 * How a retry verifies a capture: with the IdPs the sidecar verifies, waiting for no keys (a capture
 * whose keys cannot be fetched now stays). `unverifiable` says why a capture stays when there are none.
 */
export function retryVerifier(idps: ReadonlyMap<string, IdpVerificationSettings> | undefined, unverifiable: string): RetryVerify {
  if (!idps) return async () => ({ notYet: unverifiable });
  const verifier = new CaptureVerifier({ idps, cooldownMs: 0, maxWaitMs: Number.POSITIVE_INFINITY });
  return async (capture) => {
    const verdict = await verifier.verify([capture]);
    const verified = verdict.captures?.[0];
    return verified ?? { notYet: "its IdP's signing keys cannot be fetched now" };
  };
}

export interface CapturesRetryRequest {
  pool: pg.Pool;
  ring: KeyRing;
  store: GrantStore;
  verify: RetryVerify;
  /** Only this IdP's captures; undefined: every IdP. */
  idp?: string | undefined;
  /** Only these captures; empty: all chosen by idp. */
  captureIds: readonly string[];
}

/** Retries the chosen quarantined captures, oldest first, one transaction each; what happened to each. */
export async function retryQuarantinedCaptures(request: CapturesRetryRequest): Promise<RetryOutcome[]> {
  const { pool, ring, store, verify } = request;
  const chosen = await listQuarantined(pool, { idp: request.idp, captureIds: request.captureIds });
  const outcomes: RetryOutcome[] = [];
  for (const entry of chosen) {
    outcomes.push(await retryQuarantined(entry.captureId, { pool, ring, verify, write: (client, capture) => store.writeCaptureIn(client, capture) }));
  }
  return outcomes;
}
