// What a Postgres pool is told to bound and to wait for (store/pool.ts), declared beside the store
// that obeys it; config/postgres.ts reads the values from the environment.

export interface PostgresTimeouts {
  connectTimeoutMs: number;
  /** statement_timeout: the server cancels a statement after this (the connection stays usable). */
  statementTimeoutMs: number;
  /** The client gives up on a query after this; its connection is then discarded (store/pool.ts). */
  queryTimeoutMs: number;
  /** TCP keepalive: first probe after this much silence on a connection. */
  keepAliveMs: number;
  /** idle_in_transaction_session_timeout: the server ends a session left idle in a transaction. */
  idleInTransactionMs: number;
}

/**
 * What a commit of a capture, a refresh, an erasure or a durable audit row waits for
 * (TOKEN_TAP_COMMIT_DURABILITY), set per transaction whatever the database's synchronous_commit.
 * With synchronous standbys (synchronous_standby_names set): `on` (default) waits for the WAL on
 * the primary's disk and on the standbys' disks; `remote_apply` also for it to be applied there
 * (readable on them at once); `remote_write` only for the standbys to have it in memory (weaker
 * than `on`: lost if a standby's OS crashes with the primary). Without synchronous standbys all
 * three wait for the local flush only.
 */
export const COMMIT_DURABILITIES = ['on', 'remote_write', 'remote_apply'] as const;
export type CommitDurability = (typeof COMMIT_DURABILITIES)[number];
