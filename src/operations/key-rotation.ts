// Key rotation: every grant, held grant and quarantined capture sealed under an older key of the
// ring is opened and sealed again under the active key, a batch per transaction. Each batch
// commits, so a run that stops part way is resumed by running it again. Rows under a key that is
// no longer in the ring cannot be opened; they are left alone and reported by key id.
import type pg from 'pg';
import { fingerprint, open, parseDecrypted, seal, type KeyRing } from '../keys/key-ring.js';
import { withTransaction } from '../store/pool.js';
import { resealQuarantined } from '../ingest/quarantine.js';
import { errorCode } from '../lib/error-description.js';
import type { GrantStore } from '../store/grants.js';
import { asError, TokenTapError } from '../lib/errors.js';

const GRANT_FIELDS = ['access_token', 'refresh_token', 'id_token', 'extras'] as const;
const RETRYABLE = new Set(['40P01', '40001']); // deadlock detected, serialization failure

export interface RotationProgress {
  table: 'grants' | 'pending_grants' | 'quarantined_captures';
  done: number;
  total: number;
}

export interface RotationResult {
  grants: number;
  pendingGrants: number;
  /** Quarantined captures (which may hold a refresh answer's rotated token) re-sealed. */
  quarantinedCaptures: number;
  /** Keys rows are sealed under that the ring lacks, with how many rows each. */
  missing: Array<{ keyId: string; grants: number; pendingGrants: number; quarantinedCaptures: number }>;
}

/** Rows sealed under a key the ring lacks, or that cannot be opened: the rotation stops. */
export class RotationError extends TokenTapError {
  override name = 'RotationError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'failed_precondition', options);
  }
}

interface GrantCipherRow {
  idp: string;
  subject: string;
  key_id: string;
  refresh_token_key_id: string | null;
  id_token_key_id: string | null;
  access_token: Buffer | null;
  refresh_token: Buffer | null;
  id_token: Buffer | null;
  extras: Buffer | null;
  access_token_fp: string | null;
}

interface QuarantineCipherRow {
  capture_id: string;
  key_id: string;
  record: Buffer;
}

interface PendingCipherRow {
  capture_id: string;
  idp: string;
  key_id: string;
  payload: Buffer;
  access_token_fp: string;
}

// A grant's fields may each be under another key (a login that lacked a field kept its stored
// ciphertext), so a row is counted under every key it still uses besides the active one.
const GRANT_KEY_IDS = `SELECT DISTINCT idp, subject, unnest(ARRAY[key_id, COALESCE(refresh_token_key_id, CASE WHEN refresh_token IS NULL THEN NULL ELSE key_id END),
                                                    COALESCE(id_token_key_id, CASE WHEN id_token IS NULL THEN NULL ELSE key_id END)]) AS key_id FROM grants`;

async function countByKey(pool: pg.Pool, table: string, activeKeyId: string): Promise<Map<string, number>> {
  const source = table === 'grants' ? `(${GRANT_KEY_IDS}) AS used` : table;
  const { rows } = await pool.query<{ key_id: string; n: number }>(
    `SELECT key_id, count(*)::int AS n FROM ${source} WHERE key_id IS NOT NULL AND key_id <> $1 GROUP BY key_id`,
    [activeKeyId],
  );
  return new Map(rows.map((row) => [row.key_id, row.n]));
}

/** Runs `batch` in its own transaction until it finds nothing to do; `committed` hears of each commit. */
async function inBatches(pool: pg.Pool, batch: (client: pg.PoolClient) => Promise<number>, committed: (rows: number) => void): Promise<void> {
  for (;;) {
    let done = 0;
    for (let attempt = 1; ; attempt += 1) {
      try {
        done = await withTransaction(pool, batch);
        break;
      } catch (error) {
        // A capture batch locking the same rows in another order: try the batch again.
        if (!RETRYABLE.has(errorCode(error) ?? '') || attempt >= 5) throw error;
      }
    }
    if (done === 0) return;
    committed(done);
  }
}

export async function rotateKeys(
  pool: pg.Pool,
  ring: KeyRing,
  store: GrantStore,
  options: { batchSize?: number; onProgress?: (progress: RotationProgress) => void } = {},
): Promise<RotationResult> {
  const batchSize = options.batchSize ?? 200;
  const active = ring.activeKeyId;
  const grantCounts = await countByKey(pool, 'grants', active);
  const pendingCounts = await countByKey(pool, 'pending_grants', active);
  const quarantineCounts = await countByKey(pool, 'quarantined_captures', active);
  const readable = [...ring.keys.keys()].filter((keyId) => keyId !== active);
  const sum = (counts: Map<string, number>) => readable.reduce((total, keyId) => total + (counts.get(keyId) ?? 0), 0);
  const result: RotationResult = { grants: 0, pendingGrants: 0, quarantinedCaptures: 0, missing: [] };

  const grantTotal = sum(grantCounts);
  await inBatches(
    pool,
    async (client) => {
      const { rows } = await client.query<GrantCipherRow>(
        `SELECT idp, subject, key_id, refresh_token_key_id, id_token_key_id, access_token, refresh_token, id_token, extras, access_token_fp FROM grants
       WHERE (key_id <> $1 OR COALESCE(refresh_token_key_id, key_id) <> $1 OR COALESCE(id_token_key_id, key_id) <> $1)
         AND key_id = ANY($2) AND COALESCE(refresh_token_key_id, key_id) = ANY($2) AND COALESCE(id_token_key_id, key_id) = ANY($2)
       ORDER BY idp, subject LIMIT $3 FOR UPDATE`,
        // Every key of the ring, the active one included: a row under the active key but with its
        // refresh token under an old one must be moved too.
        [active, [...ring.keys.keys()], batchSize],
      );
      if (rows.length === 0) return 0;
      const columns: unknown[][] = Array.from({ length: 7 }, () => []);
      for (const row of rows) {
        const resealed = GRANT_FIELDS.map((field) => {
          const sealed = row[field];
          if (!sealed) return { field, plain: null, value: null };
          const binding = { idp: row.idp, subject: row.subject, field };
          const keyId = (field === 'refresh_token' ? row.refresh_token_key_id : field === 'id_token' ? row.id_token_key_id : null) ?? row.key_id;
          const plain = openOrExplain(ring, keyId, sealed, binding, `grant (${row.idp}, ${row.subject})`);
          return { field, plain, value: seal(ring, plain, binding) };
        });
        const accessToken = resealed[0]!.plain;
        // Fingerprints are keyed by the active key too; the grant's must match new profile lookups.
        const fp = accessToken ? fingerprint(ring, accessToken) : row.access_token_fp;
        [row.idp, row.subject, ...resealed.map((entry) => entry.value), fp].forEach((value, index) => void columns[index]!.push(value));
      }
      await client.query(
        `UPDATE grants AS g SET key_id = $8, access_token = u.access_token, refresh_token = u.refresh_token, id_token = u.id_token,
                              extras = u.extras, access_token_fp = u.access_token_fp,
                              refresh_token_key_id = CASE WHEN u.refresh_token IS NULL THEN NULL ELSE $8 END,
                              id_token_key_id = CASE WHEN u.id_token IS NULL THEN NULL ELSE $8 END
       FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::text[])
         AS u(idp, subject, access_token, refresh_token, id_token, extras, access_token_fp)
       WHERE g.idp = u.idp AND g.subject = u.subject`,
        [...columns, active],
      );
      return rows.length;
    },
    (rows) => {
      result.grants += rows;
      options.onProgress?.({ table: 'grants', done: result.grants, total: grantTotal });
    },
  );

  const pendingTotal = sum(pendingCounts);
  await inBatches(
    pool,
    async (client) => {
      const { rows } = await client.query<PendingCipherRow>(
        `SELECT capture_id, idp, key_id, payload, access_token_fp FROM pending_grants
       WHERE key_id <> $1 AND key_id = ANY($2) ORDER BY capture_id LIMIT $3 FOR UPDATE`,
        [active, readable, batchSize],
      );
      for (const row of rows) {
        const binding = store.pendingBinding(row.idp, row.capture_id);
        const plain = openOrExplain(ring, row.key_id, row.payload, binding, `held grant ${row.capture_id} of IdP ${row.idp}`);
        const accessToken = parseDecrypted<{ tokens?: { accessToken?: unknown } }>(plain, `held grant ${row.capture_id}`).tokens?.accessToken;
        const fp = typeof accessToken === 'string' ? fingerprint(ring, accessToken) : row.access_token_fp;
        await client.query('UPDATE pending_grants SET key_id = $2, payload = $3, access_token_fp = $4 WHERE capture_id = $1', [
          row.capture_id,
          active,
          seal(ring, plain, binding),
          fp,
        ]);
      }
      return rows.length;
    },
    (rows) => {
      result.pendingGrants += rows;
      options.onProgress?.({ table: 'pending_grants', done: result.pendingGrants, total: pendingTotal });
    },
  );

  // Bound to the quarantine and the capture id (ingest/quarantine.ts); re-sealed whole, never parsed.
  const quarantineTotal = sum(quarantineCounts);
  await inBatches(
    pool,
    async (client) => {
      const { rows } = await client.query<QuarantineCipherRow>(
        `SELECT capture_id, key_id, record FROM quarantined_captures
       WHERE key_id <> $1 AND key_id = ANY($2) ORDER BY capture_id LIMIT $3 FOR UPDATE`,
        [active, readable, batchSize],
      );
      if (rows.length === 0) return 0;
      const resealed = rows.map((row) => {
        try {
          return resealQuarantined(ring, row.key_id, row.record, row.capture_id);
        } catch (error) {
          throw new RotationError(
            `quarantined capture ${row.capture_id} cannot be opened under key "${row.key_id}" (${asError(error).message}); delete its row (token-tap captures quarantined lists it) or restore the key, then run again`,
            { cause: error },
          );
        }
      });
      await client.query(
        `UPDATE quarantined_captures AS q SET key_id = $3, record = u.record
       FROM unnest($1::uuid[], $2::bytea[]) AS u(capture_id, record) WHERE q.capture_id = u.capture_id`,
        [rows.map((row) => row.capture_id), resealed, active],
      );
      return rows.length;
    },
    (rows) => {
      result.quarantinedCaptures += rows;
      options.onProgress?.({ table: 'quarantined_captures', done: result.quarantinedCaptures, total: quarantineTotal });
    },
  );

  for (const keyId of new Set([...grantCounts.keys(), ...pendingCounts.keys(), ...quarantineCounts.keys()])) {
    if (!ring.keys.has(keyId)) {
      result.missing.push({
        keyId,
        grants: grantCounts.get(keyId) ?? 0,
        pendingGrants: pendingCounts.get(keyId) ?? 0,
        quarantinedCaptures: quarantineCounts.get(keyId) ?? 0,
      });
    }
  }
  result.missing.sort((a, b) => a.keyId.localeCompare(b.keyId));
  return result;
}

function openOrExplain(ring: KeyRing, keyId: string, sealed: Buffer, binding: { idp: string; subject: string; field: string }, what: string): string {
  try {
    return open(ring, keyId, sealed, binding);
  } catch (error) {
    // Nothing of this batch is written; the rows before it stay rotated.
    throw new RotationError(`${what} cannot be opened under key "${keyId}" (${asError(error).message}); delete that grant or restore the key, then run again`, {
      cause: error,
    });
  }
}
