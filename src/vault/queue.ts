// What the durable queue writes through, and how long it waits between failed attempts.
import type { Capture } from '../capture/types.js';

export interface CaptureWriter {
  /** Writes the batch; captures refused for their content are returned, the rest are written. */
  recordCaptures(batch: readonly Capture[]): Promise<{ rejected: Array<{ captureId: string; idp: string; reason: string }> }>;
}

export function backoffMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  // "Full jitter": spread retries of many sidecars over the whole window.
  return Math.max(1, Math.round(ceiling * random()));
}
