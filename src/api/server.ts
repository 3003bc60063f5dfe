// The TokenVault API server: its own gRPC listener (never the ext_proc one) and its own Postgres
// connections, so a slow IdP holding refresh locks cannot starve the capture writer. Also runs the
// retention purge when one is scheduled.
import * as grpc from '@grpc/grpc-js';
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import type { RefreshFault } from '../config/token-vault.js';
import type { CommitDurability } from '../store/pool-settings.js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { formatHostPort, type HostPort, isLoopbackOnly } from '../config/values.js';
import { AccessEventLog } from '../store/access-events.js';
import { ApiKeyRepository } from './api-keys.js';
import type { KeyRing } from '../keys/key-ring.js';
import { createPool } from '../store/pool.js';
import { schedulePurge } from '../store/purge.js';
import { GrantRefresher } from '../operations/refresh.js';
import { GrantRevoker } from '../operations/revoke.js';
import { GrantStore } from '../store/grants.js';
import { Authenticator } from './auth.js';
import type { TokenVaultConfig } from '../config/token-vault.js';
import { createApiMetrics } from './metrics.js';
import { loadTokenVault } from './protocol.js';
import { createTokenVaultHandlers } from './service.js';
import { preloadWire } from './wire.js';
import { shutdownGrpcServer } from '../lib/grpc-shutdown.js';

export interface TokenVault {
  /** Where the API listens; undefined when it is off. */
  address: HostPort | undefined;
  close(graceMs?: number): Promise<void>;
}

export interface TokenVaultDependencies {
  databaseUrl: string;
  /** synchronous_commit of the API's writes and durable audit rows (TOKEN_TAP_COMMIT_DURABILITY); default on. */
  commitDurability?: CommitDurability;
  keyRing: KeyRing;
  logger: Logger;
  registry: Registry;
  onPostgresError?: () => void;
  /** Where a refresh's answer is made durable before it is applied (the sidecar's spool). */
  refreshOutbox?: (refreshed: Capture) => Promise<boolean>;
  refreshOutboxReady?: () => boolean;
  /** Epoch ms when the capture writer last reached Postgres again after an outage (StoreState.regainedAt). */
  postgresRegainedAt?: () => number | undefined;
}

function credentials(config: TokenVaultConfig): grpc.ServerCredentials {
  if (!config.tls) return grpc.ServerCredentials.createInsecure();
  const { cert, key, clientCa } = config.tls;
  return grpc.ServerCredentials.createSsl(clientCa ?? null, [{ cert_chain: cert, private_key: key }], clientCa !== undefined);
}

/**
 * Test-only (TOKEN_TAP_FAULT_INJECTION): a real crash, or a real terminated backend, after the IdP
 * answered a refresh; once per process, as a crash or a failover comes.
 */
function injectedFault(fault: RefreshFault, logger: Logger): (tx: pg.PoolClient) => Promise<void> {
  let injected = false;
  return async (tx) => {
    if (injected) return;
    injected = true;
    logger.warn({ fault }, 'fault injection (TOKEN_TAP_FAULT_INJECTION)');
    if (fault === 'kill-after-refresh-answer') {
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => undefined);
    }
    await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
  };
}

export async function startTokenVault(config: TokenVaultConfig, dependencies: TokenVaultDependencies): Promise<TokenVault> {
  const { logger } = dependencies;
  // An idle connection of the API's pool failing is an outage the refresher must know of (refresh-takeover.ts).
  let refresher: GrantRefresher | undefined;
  const pool = createPool({
    databaseUrl: dependencies.databaseUrl,
    max: config.poolSize,
    timeouts: config.postgres,
    commitDurability: dependencies.commitDurability,
    logger,
    onError: () => {
      dependencies.onPostgresError?.();
      refresher?.postgresLost();
    },
    applicationName: 'token-tap-api',
  });
  const store = new GrantStore(pool, dependencies.keyRing);
  const metrics = createApiMetrics(dependencies.registry);
  refresher = new GrantRefresher({
    pool,
    store,
    clients: config.idpClients,
    logger,
    onUpstream: (idp, outcome) => metrics.upstreamRefreshes.inc({ idp, outcome }),
    onFieldRefused: (idp, field, action) => metrics.refreshFieldsRefused.inc({ idp, field, action }),
    ...(dependencies.postgresRegainedAt ? { postgresRegainedAt: dependencies.postgresRegainedAt } : {}),
    // Half the pool size at most at IdPs at once; the rest queue.
    maxConcurrent: Math.max(1, Math.floor(config.poolSize / 2)),
    applyWindowMs: config.refreshApplyWindowMs,
    ...(dependencies.refreshOutbox ? { outbox: dependencies.refreshOutbox } : {}),
    ...(dependencies.refreshOutboxReady ? { outboxReady: dependencies.refreshOutboxReady } : {}),
    ...(config.faultInjection ? { afterAnswerDurable: injectedFault(config.faultInjection, logger) } : {}),
  });
  const revoker = new GrantRevoker({ pool, store, clients: config.idpClients });
  const purge = config.purgeIntervalMs !== undefined ? schedulePurge(pool, config.retention, config.purgeIntervalMs, logger) : undefined;

  let server: grpc.Server | undefined;
  let address: HostPort | undefined;
  if (config.listen) {
    const bindAddress = formatHostPort(config.listen);
    const handlers = createTokenVaultHandlers({
      pool,
      store,
      keyRing: dependencies.keyRing,
      refresher,
      revoker,
      authenticator: new Authenticator(new ApiKeyRepository(pool)),
      events: new AccessEventLog(pool, { relaxedCommit: config.auditRelaxedCommit }),
      autoRefreshSeconds: config.autoRefreshSeconds,
      logger,
      metrics,
    });
    const candidate = new grpc.Server({ 'grpc.enable_channelz': 0 });
    try {
      candidate.addService(loadTokenVault().service, handlers);
      const port = await new Promise<number>((resolve, reject) =>
        candidate.bindAsync(bindAddress, credentials(config), (error, bound) => (error ? reject(error) : resolve(bound))),
      );
      server = candidate;
      address = { host: config.listen.host, port };
    } catch (error) {
      // Captures matter more than the API: a missed login's tokens are gone for good, while the
      // API can be fixed and restarted. So the sidecar goes on, loudly, without it.
      logger.error(
        { apiListen: bindAddress, err: { message: (error as Error).message } },
        'cannot serve the TokenVault API (TOKEN_TAP_API_LISTEN); going on without it',
      );
      candidate.forceShutdown();
    }
  }
  if (server && address) {
    const listen = formatHostPort(address);
    if (!config.tls && !isLoopbackOnly(address)) {
      // Only with TOKEN_TAP_ALLOW_INSECURE_API=true (config/token-vault.ts refuses it otherwise); said at every start.
      logger.warn({ listen, allowInsecure: config.allowInsecure }, 'the TokenVault API listens beyond loopback WITHOUT TLS (TOKEN_TAP_ALLOW_INSECURE_API=true): API keys and tokens cross the network in clear; set TOKEN_TAP_API_TLS_CERT/KEY (and _CLIENT_CA for mTLS)');
    }
    logger.info({ listen, tls: config.tls ? (config.tls.clientCa ? 'mtls' : 'tls') : 'none', auditCommit: config.auditRelaxedCommit ? 'relaxed' : `durable (synchronous_commit ${dependencies.commitDurability ?? 'on'})`, idpClients: [...config.idpClients.keys()] }, 'TokenVault API ready');
    setImmediate(preloadWire);
  }

  return {
    address,
    async close(graceMs = 5_000) {
      // New calls are refused; calls in progress, and the refreshes they started, get the whole
      // grace: a refresh cut after the IdP answered keeps its rotated token only in the spool.
      const serverClosed = server ? shutdownGrpcServer(server, graceMs) : Promise.resolve();
      const inFlight = refresher.inFlight();
      if (inFlight.length > 0) logger.info({ refreshesInFlight: inFlight.length, idps: [...new Set(inFlight)].sort(), graceMs }, 'stopping: waiting for refreshes in flight');
      const cut = await refresher.drain(graceMs);
      if (cut.length > 0) {
        logger.warn(
          { refreshesCut: cut.length, idps: [...new Set(cut)].sort(), graceMs },
          'stopping with refreshes still waiting on their IdP: an answer that comes after the exit is lost; their grants stay claimed until the claims expire, then another sidecar may refresh them',
        );
      } else if (inFlight.length > 0) {
        logger.info({ refreshesWaitedFor: inFlight.length }, 'the refreshes in flight at the stop finished');
      }
      await serverClosed;
      await purge?.stop();
      await pool.end().catch(() => undefined);
    },
  };
}
