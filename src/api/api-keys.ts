// The api_keys table: who may call the TokenVault API, for which IdPs and operations.
import type pg from 'pg';
import { generateApiKey, hashApiKeySecret } from './api-key-token.js';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { grantReadColumns, type OpenableGrantRow } from '../store/grant-reads.js';
import { TokenTapError } from '../lib/errors.js';

/** `exchange`: the RFC 8693 token exchange (exchange/), bound to the user whose Okta token the caller presents. */
export const OPERATIONS = ['get', 'list', 'refresh', 'revoke', 'delete', 'read_refresh_token', 'exchange'] as const;
export type Operation = (typeof OPERATIONS)[number];

/** Any IdP, or any operation. */
export const ALL = '*';

export interface ApiKeyRecord {
  id: string;
  name: string;
  idps: string[];
  operations: string[];
  createdAt: Date;
  revokedAt: Date | null;
}

export interface StoredApiKey extends ApiKeyRecord {
  secretHash: Buffer;
}

interface ApiKeyRow {
  id: string;
  name: string;
  secret_hash: Buffer;
  idps: string[];
  operations: string[];
  created_at: Date;
  revoked_at: Date | null;
}

function fromRow(row: ApiKeyRow): StoredApiKey {
  return {
    id: row.id,
    name: row.name,
    secretHash: row.secret_hash,
    idps: row.idps,
    operations: row.operations,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

/** A new key's name, IdPs or operations are not acceptable; the message lists every problem. */
export class ApiKeyInputError extends TokenTapError {
  override name = 'ApiKeyInputError';
  constructor(message: string) {
    super(message, 'invalid_argument', { exposable: true });
  }
}

/** Every problem with a new key's name, IdPs and operations, at once. */
export function checkApiKeyGrant(name: string, idps: readonly string[], operations: readonly string[]): string[] {
  const problems: string[] = [];
  if (name.trim() === '' || name.length > 200) problems.push('the key needs a --name of 1-200 characters (who will use it)');
  if (idps.length === 0) problems.push(`the key needs at least one --idp NAME (or --idp '${ALL}' for every IdP)`);
  for (const idp of idps) {
    if (idp !== ALL && !isIdpName(idp)) problems.push(`--idp "${idp}" is not an IdP name (${IDP_NAME_RULE}) or '${ALL}'`);
  }
  if (operations.length === 0) problems.push(`the key needs at least one --operation (${OPERATIONS.join(', ')}, or '${ALL}')`);
  for (const operation of operations) {
    if (operation !== ALL && !(OPERATIONS as readonly string[]).includes(operation)) {
      problems.push(`--operation "${operation}" is not one of ${OPERATIONS.join(', ')}, '${ALL}'`);
    }
  }
  return problems;
}

// Only the grant's columns a read opens (grant-reads.ts): the others would be built and parsed for nothing.
const KEY_WITH_GRANT = `SELECT k.id AS api_key_id, k.name AS api_key_name, k.secret_hash AS api_key_secret_hash, k.idps AS api_key_idps,
         k.operations AS api_key_operations, k.created_at AS api_key_created_at, k.revoked_at AS api_key_revoked_at, ${grantReadColumns('g.')}
  FROM api_keys k LEFT JOIN grants g ON g.idp = $2 AND g.subject = $3
  WHERE k.id = $1`;

export class ApiKeyRepository {
  constructor(private readonly pool: pg.Pool) {}

  /** Stores a new key and returns it with its token, which is never seen again. */
  async create(name: string, idps: readonly string[], operations: readonly string[]): Promise<ApiKeyRecord & { token: string }> {
    const problems = checkApiKeyGrant(name, idps, operations);
    if (problems.length > 0) throw new ApiKeyInputError(problems.join('\n'));
    const key = generateApiKey();
    const { rows } = await this.pool.query<ApiKeyRow>(
      'INSERT INTO api_keys (id, name, secret_hash, idps, operations) VALUES ($1, $2, $3, $4, $5) RETURNING *',
      [key.id, name.trim(), hashApiKeySecret(key.secret), [...new Set(idps)], [...new Set(operations)]],
    );
    const { secretHash: _hash, ...record } = fromRow(rows[0]!);
    return { ...record, token: key.token };
  }

  async find(id: string): Promise<StoredApiKey | undefined> {
    const { rows } = await this.pool.query<ApiKeyRow>('SELECT * FROM api_keys WHERE id = $1', [id]);
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /**
   * The key and, in the same round trip, the grant the call is about (for the hot path: one query
   * per GetGrant). The grant is only read here; it is opened after the key is checked.
   */
  async findWithGrant(id: string, idp: string, subject: string): Promise<{ key: StoredApiKey | undefined; grant: OpenableGrantRow | undefined }> {
    // Named, so each connection plans it once: this is the query of every GetGrant.
    const { rows } = await this.pool.query<OpenableGrantRow & Record<`api_key_${string}`, unknown>>({
      name: 'token-tap-key-with-grant',
      text: KEY_WITH_GRANT,
      values: [id, idp, subject],
    });
    const row = rows[0];
    if (!row) return { key: undefined, grant: undefined };
    const key = fromRow({
      id: row.api_key_id as string,
      name: row.api_key_name as string,
      secret_hash: row.api_key_secret_hash as Buffer,
      idps: row.api_key_idps as string[],
      operations: row.api_key_operations as string[],
      created_at: row.api_key_created_at as Date,
      revoked_at: row.api_key_revoked_at as Date | null,
    });
    // The api_key_* columns ride along on the grant row; nothing that reads a GrantRow looks at them.
    return { key, grant: row.idp === null ? undefined : row };
  }

  async list(): Promise<ApiKeyRecord[]> {
    const { rows } = await this.pool.query<ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at, id');
    return rows.map((row) => {
      const { secretHash: _hash, ...record } = fromRow(row);
      return record;
    });
  }

  /** Revokes a key; false when there is no such key. Revoking twice keeps the first time. */
  async revoke(id: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1', [id]);
    return (rowCount ?? 0) > 0;
  }
}
