// Retrying quarantined captures: each opened with the key ring and written as the sidecar's writer
// would, one per transaction (store/quarantine.ts). A capture quarantined before verification ran is
// verified first, as the sidecar would, with the IdPs it verifies; without them it stays: writing it
// unverified would skip a check the sidecar makes.
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import { CaptureVerifier, type IdpVerificationSettings } from '../idp/verify.js';
import type { GrantStore } from '../store/grants.js';
import { listQuarantined, retryQuarantined, type RetryOutcome } from '../store/quarantine.js';

export type RetryVerify = (capture: Capture) => Promise<Capture | { notYet: string }>;

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
