// What `keys rotate` says about the spool: how many records in it (and in its held/ folder) are
// sealed under each key id, so an operator knows when a key may leave the ring. Postgres rows are
// re-sealed by the rotation; spool records are not (they are written to Postgres under the active
// key as they drain, or age out with the grace window), so a key stays until both are at 0.
//
// The spool directory is read without its lock: the sidecar holds it while it runs, and taking it
// would keep a sidecar from starting. Files there are only appended to (whole fsynced records; a
// partial last one is ignored), renamed or deleted whole, so the counts are a snapshot; run it again
// for a later one. It reads TOKEN_TAP_SPOOL_DIR as the sidecar does: run it where each sidecar's
// spool is (in its pod).
import { spoolDirFrom } from '../config/sidecar.js';
import { spoolCensus } from '../ingest/spool-census.js';

export const SPOOL_KEY_REPORT_HELP =
  'Reports the records per key id in the spool at TOKEN_TAP_SPOOL_DIR (read without its lock): a key may leave\n' +
  'the ring once no row and no spool record (run it where each sidecar\'s spool is) is under it.';

export interface SpoolKeyReport {
  dir: string;
  exists: boolean;
  /** Records in the spool's segments by key id: waiting for Postgres, or in it and kept for the grace window. */
  records_by_key: Record<string, number>;
  /** Records moved aside into held/ because the sidecar's ring lacked their key, by key id (replayed once it has it). */
  held_by_key: Record<string, number>;
  held_unreadable: number;
  held_damaged_segments: number;
}

/** `output` with the spool's report under `spool`; what an operator must know is said on stderr. */
export async function withSpoolKeyReport<T extends object>(env: NodeJS.ProcessEnv, activeKeyId: string, output: T): Promise<T & { spool: SpoolKeyReport }> {
  const { report, notes } = await spoolKeyReport(env, activeKeyId);
  for (const note of notes) process.stderr.write(`token-tap: ${note}\n`);
  return { ...output, spool: report };
}

export async function spoolKeyReport(env: NodeJS.ProcessEnv, activeKeyId: string): Promise<{ report: SpoolKeyReport; notes: string[] }> {
  const census = await spoolCensus(spoolDirFrom(env));
  const report: SpoolKeyReport = {
    dir: census.dir,
    exists: census.exists,
    records_by_key: census.records,
    held_by_key: Object.fromEntries(census.held.keyMissing),
    held_unreadable: census.held.unreadable,
    held_damaged_segments: census.held.damagedSegments,
  };
  const keyIds = new Set([...Object.keys(report.records_by_key), ...Object.keys(report.held_by_key)]);
  keyIds.delete(activeKeyId);
  const notes = [...keyIds].sort().map(
    (keyId) =>
      `spool ${census.dir}: ${report.records_by_key[keyId] ?? 0} records and ${report.held_by_key[keyId] ?? 0} held records are sealed under key "${keyId}": ` +
      'keep it in TOKEN_TAP_KEYS until every sidecar\'s spool reports 0 of both',
  );
  if (!census.exists) notes.push(`no spool at ${census.dir} (TOKEN_TAP_SPOOL_DIR): run this where a sidecar's spool is to count its records per key`);
  return { report, notes };
}
