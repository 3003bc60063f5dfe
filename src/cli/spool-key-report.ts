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
import { emptyCensus, spoolCensus, type SpoolCensus } from '../ingest/spool-census.js';
import { errorFields } from '../lib/error-description.js';

export const SPOOL_KEY_REPORT_HELP =
  'Reports the records per key id in the spool at TOKEN_TAP_SPOOL_DIR (read without its lock): a key may leave\n' +
  "the ring once no row and no spool record (run it where each sidecar's spool is) is under it. Files the\n" +
  'spool does not know and files it cannot read are reported too (unknown_files, errors): the count is then not 0.';

export interface SpoolKeyReport {
  dir: string;
  exists: boolean;
  /** Records in the spool's segments by key id: waiting for Postgres, or in it and kept for the grace window. */
  records_by_key: Record<string, number>;
  /** Records moved aside into held/ because the sidecar's ring lacked their key, by key id (replayed once it has it). */
  held_by_key: Record<string, number>;
  held_unreadable: number;
  held_damaged_segments: number;
  /** Records by key id in damaged segments (held/damaged-*, .seg.damaged of releases before held/): kept for inspection, never replayed. */
  damaged_by_key: Record<string, number>;
  /** Files the spool does not know (not its names, not regular files, not its format): they may hold records under any key. */
  unknown_files: { count: number; names: string[]; records_by_key: Record<string, number> };
  /** What the count could not read: the numbers above leave it out. */
  errors: Array<{ file: string; code?: string; message: string }>;
}

/** `output` with the spool's report under `spool`; what an operator must know is said on stderr. */
export async function withSpoolKeyReport<T extends object>(env: NodeJS.ProcessEnv, activeKeyId: string, output: T): Promise<T & { spool: SpoolKeyReport }> {
  const { report, notes } = await spoolKeyReport(env, activeKeyId);
  for (const note of notes) process.stderr.write(`token-tap: ${note}\n`);
  return { ...output, spool: report };
}

/** A name found in the directory, as a note on stderr may quote it (no control characters). */
function shown(name: string): string {
  return JSON.stringify(name).slice(1, -1);
}

/** Never throws: run after the re-encryption, its failure must not lose the rotation's own report. */
export async function spoolKeyReport(env: NodeJS.ProcessEnv, activeKeyId: string): Promise<{ report: SpoolKeyReport; notes: string[] }> {
  const dir = spoolDirFrom(env);
  let census: SpoolCensus;
  try {
    census = await spoolCensus(dir);
  } catch (error) {
    census = {
      dir,
      exists: true,
      records: {},
      held: emptyCensus(),
      damaged: {},
      unknownFiles: { count: 0, names: [], byKey: {} },
      errors: [{ file: '.', ...errorFields(error) }],
    };
  }
  const report: SpoolKeyReport = {
    dir: census.dir,
    exists: census.exists,
    records_by_key: census.records,
    held_by_key: Object.fromEntries(census.held.keyMissing),
    held_unreadable: census.held.unreadable,
    held_damaged_segments: census.held.damagedSegments,
    damaged_by_key: census.damaged,
    unknown_files: { count: census.unknownFiles.count, names: census.unknownFiles.names, records_by_key: census.unknownFiles.byKey },
    errors: census.errors,
  };
  const keyIds = new Set([
    ...Object.keys(report.records_by_key),
    ...Object.keys(report.held_by_key),
    ...Object.keys(report.damaged_by_key),
    ...Object.keys(report.unknown_files.records_by_key),
  ]);
  keyIds.delete(activeKeyId);
  const notes = [...keyIds].sort().map((keyId) => {
    const elsewhere = (report.damaged_by_key[keyId] ?? 0) + (report.unknown_files.records_by_key[keyId] ?? 0);
    return (
      `spool ${census.dir}: ${report.records_by_key[keyId] ?? 0} records and ${report.held_by_key[keyId] ?? 0} held records` +
      (elsewhere > 0 ? ` (and ${elsewhere} in damaged or unknown files)` : '') +
      ` are sealed under key "${shown(keyId)}": keep it in TOKEN_TAP_KEYS until every sidecar's spool reports 0 of both`
    );
  });
  if (report.held_damaged_segments > 0) {
    notes.push(
      `spool ${census.dir}: ${report.held_damaged_segments} damaged segments are kept in held/: records past the damage cannot be counted by key id ` +
        '(damaged_by_key counts those before it); inspect them before a key leaves the ring',
    );
  }
  if (report.unknown_files.count > 0) {
    notes.push(
      `spool ${census.dir}: ${report.unknown_files.count} files the spool does not know (${report.unknown_files.names.map(shown).join(', ')}${report.unknown_files.count > report.unknown_files.names.length ? ', ...' : ''}) ` +
        'are not counted as spool records: they may hold records under any key; inspect them before a key leaves the ring',
    );
  }
  if (report.errors.length > 0) {
    notes.push(
      `spool ${census.dir}: the count is incomplete: ${report.errors.length} files could not be read (${report.errors
        .slice(0, 5)
        .map((error) => `${shown(error.file)}: ${error.code ?? 'error'}`)
        .join(', ')}); ` + 'their records are not in the numbers: run it again with access to them before a key leaves the ring',
    );
  }
  if (!census.exists) notes.push(`no spool at ${census.dir} (TOKEN_TAP_SPOOL_DIR): run this where a sidecar's spool is to count its records per key`);
  return { report, notes };
}
