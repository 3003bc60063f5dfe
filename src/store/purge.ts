// Retention: grants not updated for longer than a configured age, and capture and access events,
// quarantined captures and tombstones of erasures older than another, are deleted. Deletes go in
// batches so no statement holds locks for long.
//
// Order matters for tombstones: one may still be what keeps a quarantined capture of an erased user
// from being written again by `captures retry` (a row the erasure could not find: from before 000011
// or a sidecar of an earlier release, with no subject fingerprint; a held token response, which names
// no user until a profile links it). So the quarantine goes first, and a tombstone older than the
// retention stays while a quarantined capture observed at or before it is left (those are purged by
// the same retention, so not for long).
import type pg from 'pg';
import type { Logger } from 'pino';

export interface RetentionPolicy {
  /** Grants (and held grants) whose last login or refresh is older than this; undefined: kept. */
  grantsOlderThanMs?: number;
  /** capture_events, access_events, quarantined_captures and tombstones older than this; undefined: kept. */
  eventsOlderThanMs?: number;
}

export interface PurgeResult {
  grants: number;
  pendingGrants: number;
  captureEvents: number;
  accessEvents: number;
  /** Quarantined captures set aside longer ago than the event retention (never retried successfully). */
  quarantinedCaptures: number;
  /** Erasures older than the event retention: a capture observed before one no longer waits anywhere. */
  tombstones: number;
}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90d", "12h", "30m", "45s" → milliseconds; undefined for anything else. */
export function parseAge(text: string): number | undefined {
  const match = /^\s*(\d{1,6})\s*([smhd])\s*$/.exec(text);
  if (!match) return undefined;
  const ms = Number.parseInt(match[1]!, 10) * UNITS[match[2]!]!;
  return ms > 0 ? ms : undefined;
}

/** An age setting or flag (`name` says which), undefined when unset; a bad value joins `problems`. */
export function readAge(text: string | undefined, name: string, problems: string[]): number | undefined {
  if (text === undefined || text === '') return undefined;
  const ms = parseAge(text);
  if (ms === undefined) problems.push(`${name} must be an age such as 90d, 12h, 30m or 45s, got "${text}"`);
  return ms;
}

/** Deletes rows of `table` whose `column` is before `before` (and which meet `also`, if given). */
async function deleteInBatches(pool: pg.Pool, table: string, column: string, before: Date, batchSize: number, also = 'true'): Promise<number> {
  let total = 0;
  for (;;) {
    const { rowCount } = await pool.query(`DELETE FROM ${table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${table} WHERE ${column} < $1 AND ${also} LIMIT $2))`, [
      before,
      batchSize,
    ]);
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize) return total;
  }
}

export async function purgeExpired(pool: pg.Pool, policy: RetentionPolicy, options: { now?: Date; batchSize?: number } = {}): Promise<PurgeResult> {
  const now = (options.now ?? new Date()).getTime();
  const batchSize = options.batchSize ?? 5_000;
  const result: PurgeResult = { grants: 0, pendingGrants: 0, captureEvents: 0, accessEvents: 0, quarantinedCaptures: 0, tombstones: 0 };
  if (policy.grantsOlderThanMs !== undefined) {
    const before = new Date(now - policy.grantsOlderThanMs);
    result.grants = await deleteInBatches(pool, 'grants', 'updated_at', before, batchSize);
    result.pendingGrants = await deleteInBatches(pool, 'pending_grants', 'observed_at', before, batchSize);
  }
  if (policy.eventsOlderThanMs !== undefined) {
    const before = new Date(now - policy.eventsOlderThanMs);
    result.captureEvents = await deleteInBatches(pool, 'capture_events', 'observed_at', before, batchSize);
    result.accessEvents = await deleteInBatches(pool, 'access_events', 'at', before, batchSize);
    result.quarantinedCaptures = await deleteInBatches(pool, 'quarantined_captures', 'quarantined_at', before, batchSize);
    // Kept while a quarantined capture observed at or before it is left: a retry must still drop it.
    const noQuarantinedCaptureBefore = `erased_at < COALESCE((SELECT min(observed_at) FROM quarantined_captures), 'infinity')`;
    result.tombstones = await deleteInBatches(pool, 'tombstones', 'erased_at', before, batchSize, noQuarantinedCaptureBefore);
  }
  return result;
}

/** Runs the purge every `intervalMs` in the sidecar; a failed run is logged and tried next time. */
export function schedulePurge(pool: pg.Pool, policy: RetentionPolicy, intervalMs: number, logger: Logger): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  const run = () => {
    if (running) return;
    running = purgeExpired(pool, policy)
      .then((result) => logger.info({ purged: result }, 'retention purge done'))
      .catch((error: Error) => logger.warn({ err: { message: error.message } }, 'retention purge failed; next try at the next interval'))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
