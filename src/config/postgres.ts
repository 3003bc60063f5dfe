// How long Postgres may take before the sidecar stops waiting: connecting, a statement (on the
// server), a query (on the client: the server may be unreachable and never say), and an open
// transaction left idle. Read for the capture writer and, apart, for the TokenVault API, whose
// callers must get an answer quickly even when Postgres does not give one.
import type { CommitDurability, PostgresTimeouts } from '../store/pool-settings.js';
import { COMMIT_DURABILITY, PG_KEEPALIVE_MS, PG_TIMEOUTS, readChoice, readInteger } from './settings.js';

type TimeoutsPrefix = keyof typeof PG_TIMEOUTS;

/** The declared defaults of one set of timeouts (config/settings.ts). */
function declaredDefaults(prefix: TimeoutsPrefix): PostgresTimeouts {
  const declared = PG_TIMEOUTS[prefix];
  return {
    connectTimeoutMs: declared.connect.default,
    statementTimeoutMs: declared.statement.default,
    queryTimeoutMs: declared.query.default,
    keepAliveMs: PG_KEEPALIVE_MS.default,
    idleInTransactionMs: declared.idleInTransaction.default,
  };
}

// The writer's transactions never wait on anything but Postgres: one cut off mid-way (its client
// partitioned away) must not hold grant rows locked for long, or the next writer waits on it.
export const WRITER_TIMEOUTS: PostgresTimeouts = declaredDefaults('TOKEN_TAP_PG');
// A TokenVault call to an unreachable Postgres gives up on the key check after 2.25 s and answers
// UNAVAILABLE at once (its audit row follows); one whose key check passed waits for its audit row, at
// most 2.25 s more: within 5 s either way. Idle in a transaction for longer than the longest IdP timeout
// (timeout_ms at most 120000): a revocation holds its grant's row lock while the IdP answers (a
// refresh does not: it claims the grant in a committed row, operations/refresh.ts).
export const API_TIMEOUTS: PostgresTimeouts = declaredDefaults('TOKEN_TAP_API_PG');

/**
 * `prefix` is TOKEN_TAP_PG (the capture writer) or TOKEN_TAP_API_PG (the API); keepalive is shared
 * (TOKEN_TAP_PG_KEEPALIVE_MS). Defaults are the declared ones (config/settings.ts). Problems join `problems`.
 */
export function readPostgresTimeouts(env: NodeJS.ProcessEnv, prefix: TimeoutsPrefix, problems: string[]): PostgresTimeouts {
  const declared = PG_TIMEOUTS[prefix];
  const connectTimeoutMs = readInteger(env, declared.connect, problems);
  const statementTimeoutMs = readInteger(env, declared.statement, problems);
  // Unset, it follows the statement timeout, so a reachable server cancels first and the connection is kept.
  const queryDefault = statementTimeoutMs + (declared.query.default - declared.statement.default);
  const queryTimeoutMs = readInteger(env, declared.query, problems, queryDefault);
  if (queryTimeoutMs < statementTimeoutMs) {
    problems.push(
      `${prefix}_QUERY_TIMEOUT_MS (${queryTimeoutMs}) must be at least ${prefix}_STATEMENT_TIMEOUT_MS (${statementTimeoutMs}): the server should cancel a slow statement before the client drops the connection`,
    );
  }
  // Shared: reported once, by the writer's reading.
  const keepAliveMs = readInteger(env, PG_KEEPALIVE_MS, prefix === 'TOKEN_TAP_PG' ? problems : []);
  const idleInTransactionMs = readInteger(env, declared.idleInTransaction, problems);
  return { connectTimeoutMs, statementTimeoutMs, queryTimeoutMs, keepAliveMs, idleInTransactionMs };
}

/** TOKEN_TAP_COMMIT_DURABILITY: what each commit waits for (store/pool-settings.ts says what each level means). */
export function readCommitDurability(env: NodeJS.ProcessEnv, problems: string[]): CommitDurability {
  return readChoice(env, COMMIT_DURABILITY, problems);
}
