// Refreshing a grant with its stored refresh token. IdPs that rotate refresh tokens accept each
// one once (and some, oidc-provider among them, revoke the whole grant when one is replayed), so
// two refreshes of one grant must never overlap:
//  - in this process, callers that arrive while a refresh of the grant runs join it;
//  - across processes (several sidecars, the CLI), the row lock serialises them, and the row is
//    read again once the lock is held: if it changed after the caller arrived, that change is the
//    fresh result and the IdP is not called again.
// Once the IdP has answered, its answer is the only copy of a rotated refresh token (the IdP has
// spent the old one). It is sealed into the spool (the outbox) and fsynced before the transaction
// that applies it; if that transaction fails (a terminated backend, a failover, a crash), the
// pump applies the spooled copy when Postgres is back, and a sidecar restarted after a crash
// replays it. When the transaction succeeds, the pump's later copy changes nothing (the
// late-login guard keeps the row as it is, or writes the same tokens again).
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { stringClaim } from '../capture/jwt.js';
import type { Capture } from '../capture/types.js';
import { grantNotFound, isPostgresUnavailable, VaultError } from '../store/errors.js';
import { openGrant, rereadGrant, withLockedGrant } from '../store/grant-lock.js';
import { IdpCallError, type IdpClients } from './client.js';
import { IDP_CONFIG_ENV } from '../config/idp-file.js';
import { markRevoked } from './revoke.js';
import type { GrantRecord, GrantStore } from '../store/grants.js';

export interface RefreshResult {
  grant: GrantRecord;
  /** False when a change made after the caller arrived (another refresh, a new login) was served. */
  refreshedByThisCall: boolean;
}

export interface RefreshConditions {
  /** When the caller asked; a grant updated since then is already fresh. Default: now. */
  arrivedAt?: Date;
  /** Refresh only if the access token expires within this many ms (automatic refresh on read). */
  onlyIfExpiringWithinMs?: number;
}

export interface GrantRefresherOptions {
  pool: pg.Pool;
  store: GrantStore;
  clients: IdpClients;
  logger?: Logger;
  /** How long a caller waits for another holder of the grant's row lock. */
  lockTimeoutMs?: number;
  /** Called once per call to the IdP's token endpoint, with its outcome. */
  onUpstream?: (idp: string, outcome: 'ok' | 'invalid_grant' | 'refused' | 'unavailable') => void;
  /**
   * Makes a refreshed answer durable before it is applied (the sidecar's spool). Resolves false
   * when it could not (spool full or closed); the refresh then goes on without that safety net,
   * logged. Undefined (the CLI): applied in the transaction alone.
   */
  outbox?: (refreshed: Capture) => Promise<boolean>;
  /** Whether the outbox can take an answer now; when it cannot, the IdP is not called (UNAVAILABLE). */
  outboxReady?: () => boolean;
  /** Fault injection for tests: runs after the answer is durable, before the transaction writes it. */
  afterAnswerDurable?: (tx: pg.PoolClient) => Promise<void>;
  /**
   * Refreshes of different grants running at once. Each holds a Postgres connection while the IdP
   * answers; the limit keeps a slow IdP from taking every connection the reads need.
   */
  maxConcurrent?: number;
}

export class GrantRefresher {
  private readonly running = new Map<string, Promise<RefreshResult>>();
  /**
   * Answers spooled whose own transaction failed (by grant). A caller retrying at once must not
   * call the IdP with the refresh token it already spent (invalid_grant would revoke the grant):
   * the next refresh of that grant here applies the kept answer instead.
   */
  private readonly unapplied = new Map<string, Capture>();
  private active = 0;
  private readonly queued: Array<() => void> = [];

  constructor(private readonly options: GrantRefresherOptions) {}

  refresh(idp: string, subject: string, conditions: RefreshConditions = {}): Promise<RefreshResult> {
    const key = JSON.stringify([idp, subject]);
    const running = this.running.get(key);
    if (running) return running.then((result) => ({ ...result, refreshedByThisCall: false }));
    const arrived = { arrivedAt: new Date(), ...conditions };
    const started = this.withSlot(() => this.refreshLocked(idp, subject, arrived)).finally(() => this.running.delete(key));
    this.running.set(key, started);
    return started;
  }

  /** Runs `work` when fewer than maxConcurrent refreshes run; a finishing one hands its slot on. */
  private async withSlot<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= Math.max(1, this.options.maxConcurrent ?? 2)) await new Promise<void>((resolve) => this.queued.push(resolve));
    else this.active += 1;
    try {
      return await work();
    } finally {
      const next = this.queued.shift();
      if (next) next();
      else this.active -= 1;
    }
  }

  private async refreshLocked(idp: string, subject: string, conditions: RefreshConditions & { arrivedAt: Date }): Promise<RefreshResult> {
    const { pool, store, clients, logger, onUpstream } = this.options;
    const lockTimeoutMs = this.options.lockTimeoutMs ?? 30_000;
    let refusal: VaultError | undefined;
    const key = JSON.stringify([idp, subject]);
    const result = await withLockedGrant(pool, idp, subject, lockTimeoutMs, async (tx, row): Promise<RefreshResult | undefined> => {
      if (!row) throw grantNotFound(idp, subject);
      const grant = openGrant(store, row);
      if (grant.status === 'revoked') throw revokedError(idp, subject);
      const kept = this.unapplied.get(key);
      // Already stored (the pump applied the spooled copy, or a login brought a newer refresh
      // token), or nothing was rotated: the normal checks below decide, and the IdP may be called.
      const keptApplied = kept && (!kept.tokens?.refreshToken || (row.refresh_token_observed_at !== null && row.refresh_token_observed_at >= kept.observedAt));
      if (kept && keptApplied) this.unapplied.delete(key);
      if (kept && !keptApplied) {
        try {
          // Merged by capture time, as the pump would: a newer refresh token (another sidecar's) stays.
          await store.upsertGrant(tx, kept);
        } catch (error) {
          // It fails for itself, not for an outage (a value over a limit, say): it will not be written
          // here, so it must not block the grant's refreshes; the pump quarantines its spooled copy.
          if (!isPostgresUnavailable(error)) this.unapplied.delete(key);
          throw error;
        }
        logger?.info({ idp, subject, captureId: kept.captureId }, 'applied a refresh answer whose first write failed, without calling the IdP again');
        return { grant: openGrant(store, await rereadGrant(tx, idp, subject)), refreshedByThisCall: true };
      }
      if (row.updated_at >= conditions.arrivedAt) return { grant, refreshedByThisCall: false };
      const expiresAt = grant.accessTokenExpiresAt?.getTime();
      if (conditions.onlyIfExpiringWithinMs !== undefined && expiresAt !== undefined && expiresAt - Date.now() > conditions.onlyIfExpiringWithinMs) {
        return { grant, refreshedByThisCall: false };
      }
      if (!grant.refreshToken) {
        throw new VaultError(`grant (${idp}, ${subject}) has no refresh token: the IdP issued none (many need an offline_access scope, or a setting, to issue one)`, 'failed_precondition');
      }
      const client = clients.get(idp);
      if (!client) {
        throw new VaultError(`no client credentials for IdP "${idp}": add it to the file named by ${IDP_CONFIG_ENV} (token_url, client_id, client_secret_env)`, 'failed_precondition');
      }
      // A refresh token works only for the client it was issued to.
      if (grant.clientId && grant.clientId !== client.clientId) {
        throw new VaultError(
          `grant (${idp}, ${subject}) was issued to client "${grant.clientId}", but ${IDP_CONFIG_ENV} names client "${client.clientId}" for IdP "${idp}": use the client Okta uses`,
          'failed_precondition',
        );
      }
      // Calling the IdP spends the stored refresh token: only when its answer can be kept.
      if (this.options.outboxReady && !this.options.outboxReady()) {
        throw new VaultError('the sidecar cannot keep a refresh answer durably right now (its spool is full or closing); try again later', 'unavailable');
      }
      const requestedAt = new Date();
      let tokens;
      try {
        tokens = await client.refresh(grant.refreshToken, grant.issuer ?? undefined);
      } catch (error) {
        if (!(error instanceof IdpCallError)) throw error;
        if (error.errorCode === 'invalid_grant') {
          onUpstream?.(idp, 'invalid_grant');
          await markRevoked(tx, idp, subject);
          logger?.warn({ idp, subject }, 'IdP refused the stored refresh token (invalid_grant); grant marked revoked');
          refusal = revokedError(idp, subject, 'the IdP refused the stored refresh token (invalid_grant)');
          return undefined;
        }
        onUpstream?.(idp, error.kind === 'unavailable' ? 'unavailable' : 'refused');
        throw new VaultError(
          error.kind === 'unavailable' ? `${error.message}; try again` : `${error.message}; check the client for IdP "${idp}" in ${IDP_CONFIG_ENV}`,
          error.kind === 'unavailable' ? 'unavailable' : 'failed_precondition',
          { cause: error },
        );
      }
      onUpstream?.(idp, 'ok');
      // OIDC Core 12.2: a refreshed id_token names the same user. Another sub means the IdP (or
      // whoever answers at its token URL) mixed up grants: nothing is stored.
      const refreshedSubject = tokens.idToken ? stringClaim(tokens.claims, 'sub') : subject;
      if (refreshedSubject !== subject) {
        logger?.error({ idp, subject }, 'IdP answered the refresh with an id_token for another subject; nothing stored (OIDC Core 12.2)');
        throw new VaultError(`IdP "${idp}" answered the refresh of (${idp}, ${subject}) with an id_token for another subject; the stored grant is unchanged`, 'failed_precondition');
      }
      const refreshed: Capture = {
        captureId: randomUUID(),
        idp,
        observedAt: requestedAt,
        httpStatus: 200,
        outcome: 'stored',
        subject,
        issuer: stringClaim(tokens.claims, 'iss'),
        clientId: undefined,
        email: stringClaim(tokens.claims, 'email'),
        tokens,
        errorCode: undefined,
        detail: undefined,
        // The sidecar called the IdP's configured token endpoint itself, over TLS: the answer is
        // as trustworthy as the grant it refreshes (OIDC Core 3.1.3.7), no more.
        verified: grant.verified,
        obtainedByRefresh: true,
      };
      if (this.options.outbox && !(await this.options.outbox(refreshed))) {
        logger?.warn({ idp, subject, captureId: refreshed.captureId }, 'the refreshed tokens could not be spooled first (spool full or closing); applying them directly');
      }
      this.unapplied.set(key, refreshed);
      await this.options.afterAnswerDurable?.(tx);
      await store.writeObtainedTokens(tx, refreshed);
      return { grant: openGrant(store, await rereadGrant(tx, idp, subject)), refreshedByThisCall: true };
    });
    this.unapplied.delete(key);
    if (refusal) throw refusal;
    return result!;
  }
}

function revokedError(idp: string, subject: string, why = 'it was revoked'): VaultError {
  return new VaultError(`grant (${idp}, ${subject}) is revoked (${why}): the user must sign in again`, 'failed_precondition');
}
