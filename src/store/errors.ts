// Why a vault operation did not happen, in terms a caller can act on. The API turns the outcome
// into a gRPC status; the CLI into an exit code. Messages never contain token material.
import { errorCode, errorFields, errorName } from '../lib/error-description.js';
import { type Outcome, TokenTapError } from '../lib/errors.js';

/** The outcomes a vault operation can end in besides success; the API audits them under the same names. */
export type VaultOutcome = Extract<Outcome, 'invalid_argument' | 'not_found' | 'failed_precondition' | 'unavailable'>;

/** A vault operation refused or could not be done; its message is answered to API callers as it is. */
export class VaultError extends TokenTapError {
  override name = 'VaultError';
  declare readonly outcome: VaultOutcome;
  constructor(message: string, outcome: VaultOutcome, options?: { cause?: unknown }) {
    super(message, outcome, { ...options, exposable: true });
  }
}

export function grantNotFound(idp: string, subject: string): VaultError {
  return new VaultError(`no grant stored for IdP "${idp}" and subject "${subject}"`, 'not_found');
}

// pg's own errors when the connection, not the statement, failed; they carry no code.
const CONNECTION_FAILURES = new Set([
  'timeout exceeded when trying to connect',
  'Connection terminated due to connection timeout',
  'timeout expired',
  'Query read timeout',
  'Connection terminated',
  'Connection terminated unexpectedly',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'Cannot use a pool after calling end on the pool',
  'The server does not support SSL connections',
  'There was an error establishing an SSL connection',
]);

/**
 * SQLSTATEs that say Postgres cannot take writes now, whatever they hold: connection exceptions
 * (08), insufficient resources (53: disk full, out of memory, too many connections), operator
 * intervention (57: admin shutdown, a statement cancelled by statement_timeout), transaction
 * rollback (40: serialization failure, deadlock), lock not available (55P03), system or I/O error
 * (58). Also undefined_table (42P01: the schema is not migrated yet) and insufficient_privilege
 * (42501: a privilege revoked from the role): both refuse every capture alike, so setting captures
 * aside one by one would only empty the spool into the quarantine.
 */
const UNAVAILABLE_SQLSTATE = /^(08|53|57|40|58)[0-9A-Z]{3}$|^55P03$|^42P01$|^42501$/;
const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * Whether `error` says Postgres is unavailable (retry the same work later, with backoff) rather
 * than that this work failed (a value Postgres refuses, a program limit, a bug, a token that cannot
 * be opened): the capture writer sets the latter aside instead of retrying it forever.
 */
export function isPostgresUnavailable(error: unknown): boolean {
  const { message } = errorFields(error);
  if (typeof error === 'object' && error !== null && (CONNECTION_FAILURES.has(message) || /^Received unexpected \w+ message from backend\.$/.test(message)))
    return true;
  const code = errorCode(error);
  if (code === undefined) return false;
  if (SQLSTATE.test(code) && !code.startsWith('E')) return UNAVAILABLE_SQLSTATE.test(code);
  // No SQLSTATE: a system error of the socket (ECONNREFUSED, ECONNRESET, ETIMEDOUT, ENOTFOUND,
  // EAI_AGAIN, EPIPE ...) or of TLS while connecting; Node's own ERR_* codes are bugs, not outages.
  return (/^E[A-Z_]+$/.test(code) && !code.startsWith('ERR_')) || typeof (error as { syscall?: unknown }).syscall === 'string' || /CERT|TLS|SSL/.test(code);
}

/** How the capture writer labels a capture it set aside (a metric label: a small fixed set). */
export type QuarantineLabel = 'refused_by_postgres' | 'unreadable' | 'failed';

/**
 * Why one capture could not be written, in words that quote no value (an error's message may):
 * the SQLSTATE, or the error's class name, bounded.
 */
export function describeCaptureFailure(error: unknown): { label: QuarantineLabel; reason: string } {
  const code = errorCode(error);
  if (code !== undefined && SQLSTATE.test(code)) return { label: 'refused_by_postgres', reason: `Postgres refused it (SQLSTATE ${code})` };
  const name = errorName(error);
  if (name === 'DecryptError') return { label: 'unreadable', reason: `cannot open a held grant (${name})` };
  return { label: 'failed', reason: `writing it failed (${name})` };
}
