// Reading grants without decrypting them: listings for operators and callers, and finding a
// user by email claim.
import type pg from 'pg';

export interface GrantSummaryRecord {
  idp: string;
  subject: string;
  status: 'active' | 'revoked';
  issuer: string | null;
  clientId: string | null;
  email: string | null;
  scope: string[];
  hasRefreshToken: boolean;
  accessTokenExpiresAt: Date | null;
  refreshTokenExpiresAt: Date | null;
  capturedAt: Date;
  updatedAt: Date;
  version: number;
  /** The id_token was verified before it was stored (grants.verified). */
  verified: boolean;
}

interface SummaryRow {
  idp: string;
  subject: string;
  status: 'active' | 'revoked';
  issuer: string | null;
  client_id: string | null;
  email: string | null;
  scope: string[];
  has_refresh_token: boolean;
  access_token_expires_at: Date | null;
  refresh_token_expires_at: Date | null;
  captured_at: Date;
  updated_at: Date;
  version: number;
  verified: boolean;
}

const SUMMARY_COLUMNS = `idp, subject, status, issuer, client_id, email, scope, refresh_token IS NOT NULL AS has_refresh_token,
  access_token_expires_at, refresh_token_expires_at, captured_at, updated_at, version, verified`;

function summaryOf(row: SummaryRow): GrantSummaryRecord {
  return {
    idp: row.idp,
    subject: row.subject,
    status: row.status,
    issuer: row.issuer,
    clientId: row.client_id,
    email: row.email,
    scope: row.scope,
    hasRefreshToken: row.has_refresh_token,
    accessTokenExpiresAt: row.access_token_expires_at,
    refreshTokenExpiresAt: row.refresh_token_expires_at,
    capturedAt: row.captured_at,
    updatedAt: row.updated_at,
    version: row.version,
    verified: row.verified,
  };
}

export interface GrantPosition {
  idp: string;
  subject: string;
}

export interface ListGrantsQuery {
  /** Only these IdPs; undefined: every IdP. */
  idps: readonly string[] | undefined;
  /** Grants after this one in (idp, subject) order. */
  after: GrantPosition | undefined;
  limit: number;
}

/** One page in (idp, subject) order, and where the next page starts (undefined on the last). */
export async function listGrants(pool: pg.Pool, query: ListGrantsQuery): Promise<{ grants: GrantSummaryRecord[]; next: GrantPosition | undefined }> {
  const { rows } = await pool.query<SummaryRow>(
    `SELECT ${SUMMARY_COLUMNS} FROM grants
     WHERE ($1::text[] IS NULL OR idp = ANY($1)) AND ($2::text IS NULL OR (idp, subject) > ($2, $3))
     ORDER BY idp, subject LIMIT $4`,
    [query.idps ?? null, query.after?.idp ?? null, query.after?.subject ?? null, query.limit + 1],
  );
  const grants = rows.slice(0, query.limit).map(summaryOf);
  const last = grants.at(-1);
  return { grants, next: rows.length > query.limit && last ? { idp: last.idp, subject: last.subject } : undefined };
}

/** Subjects of an IdP whose email claim matches, case-insensitively (at most `limit`). */
export async function subjectsByEmail(pool: pg.Pool, idp: string, email: string, limit = 2): Promise<string[]> {
  const { rows } = await pool.query<{ subject: string }>(
    'SELECT subject FROM grants WHERE idp = $1 AND lower(email) = lower($2) ORDER BY updated_at DESC LIMIT $3',
    [idp, email, limit],
  );
  return rows.map((row) => row.subject);
}
