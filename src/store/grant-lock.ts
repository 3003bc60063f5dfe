// One grant row locked for the length of a transaction (SELECT ... FOR UPDATE), so the steps of a
// refresh (claiming, writing its answer), a revocation and a key rotation of the same grant never
// interleave, across sidecars too. A refresh holds no lock while its IdP answers: its claim
// (refresh-claims.ts) fences other refreshes then.
import type pg from 'pg';
import { DecryptError } from '../keys/key-ring.js';
import { withTransaction } from './pool.js';
import { errorCode } from '../lib/error-description.js';
import { VaultError } from './errors.js';
import type { GrantRecord, GrantRow, GrantStore } from './grants.js';

const LOCK_NOT_AVAILABLE = '55P03';

/**
 * Runs `work` in a transaction holding the row lock of (idp, subject); `row` is undefined when
 * there is no such grant. Waits at most `lockTimeoutMs` for another holder. Commits what `work`
 * wrote unless it throws.
 */
export async function withLockedGrant<T>(
  pool: pg.Pool,
  idp: string,
  subject: string,
  lockTimeoutMs: number,
  work: (client: pg.PoolClient, row: GrantRow | undefined) => Promise<T>,
): Promise<T> {
  try {
    return await withTransaction(pool, async (client) => {
      await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(lockTimeoutMs))}`);
      const { rows } = await client.query<GrantRow>('SELECT * FROM grants WHERE idp = $1 AND subject = $2 FOR UPDATE', [idp, subject]);
      return work(client, rows[0]);
    });
  } catch (error) {
    if (errorCode(error) === LOCK_NOT_AVAILABLE) {
      throw new VaultError(`grant (${idp}, ${subject}) is busy: another refresh or revocation held it for over ${lockTimeoutMs} ms; try again`, 'unavailable', {
        cause: error,
      });
    }
    throw error;
  }
}

/** The locked row again, after `work` changed it. */
export async function rereadGrant(client: pg.PoolClient, idp: string, subject: string): Promise<GrantRow> {
  const { rows } = await client.query<GrantRow>('SELECT * FROM grants WHERE idp = $1 AND subject = $2', [idp, subject]);
  return rows[0]!;
}

/** Decrypts a locked row; a row under a key that is not in the ring is the operator's to fix. */
export function openGrant(store: GrantStore, row: GrantRow): GrantRecord {
  try {
    return store.decrypt(row);
  } catch (error) {
    if (error instanceof DecryptError) throw new VaultError(error.message, 'failed_precondition', { cause: error });
    throw error;
  }
}
