// The TokenVault API server: its own gRPC listener (never the ext_proc one). It translates calls
// into operations on what the sidecar hands it (sidecar.ts): the API's own Postgres pool, so a slow
// IdP holding refresh locks cannot starve the capture writer, the refresher and the revoker.
import * as grpc from '@grpc/grpc-js';
import type pg from 'pg';
import type { CommitDurability } from '../store/pool-settings.js';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort, isLoopbackOnly } from '../config/values.js';
import type { AccessEventLog } from '../store/access-events.js';
import { ApiKeyRepository } from './api-keys.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { GrantRefresher } from '../operations/refresh.js';
import type { GrantRevoker } from '../operations/revoke.js';
import type { GrantStore } from '../store/grants.js';
import { Authenticator } from './auth.js';
import type { TokenVaultConfig } from '../config/token-vault.js';
import type { ApiMetrics } from './metrics.js';
import { loadTokenVault } from './protocol.js';
import { createTokenVaultHandlers } from './service.js';
import { preloadWire } from './wire.js';
import { shutdownGrpcServer } from '../lib/grpc-shutdown.js';
import { describeError } from '../lib/error-description.js';

export interface TokenVault {
  /** Where the API listens; undefined when it is off. */
  address: HostPort | undefined;
  close(graceMs?: number): Promise<void>;
}

export interface TokenVaultDependencies {
  /** The API's own pool (not closed here). */
  pool: pg.Pool;
  store: GrantStore;
  keyRing: KeyRing;
  refresher: GrantRefresher;
  revoker: GrantRevoker;
  /** The audit log of API calls (access_events). */
  events: AccessEventLog;
  metrics: ApiMetrics;
  logger: Logger;
  /** synchronous_commit of the API's writes and durable audit rows (TOKEN_TAP_COMMIT_DURABILITY), as logged; default on. */
  commitDurability?: CommitDurability | undefined;
}

function credentials(config: TokenVaultConfig): grpc.ServerCredentials {
  if (!config.tls) return grpc.ServerCredentials.createInsecure();
  const { cert, key, clientCa } = config.tls;
  return grpc.ServerCredentials.createSsl(clientCa ?? null, [{ cert_chain: cert, private_key: key }], clientCa !== undefined);
}

export async function startTokenVault(config: TokenVaultConfig, dependencies: TokenVaultDependencies): Promise<TokenVault> {
  const { logger, pool, store, refresher, revoker, metrics } = dependencies;
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
      events: dependencies.events,
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
      logger.error({ apiListen: bindAddress, err: describeError(error) }, 'cannot serve the TokenVault API (TOKEN_TAP_API_LISTEN); going on without it');
      candidate.forceShutdown();
    }
  }
  if (server && address) {
    const listen = formatHostPort(address);
    if (!config.tls && !isLoopbackOnly(address)) {
      // Only with TOKEN_TAP_ALLOW_INSECURE_API=true (config/token-vault.ts refuses it otherwise); said at every start.
      logger.warn(
        { listen, allowInsecure: config.allowInsecure },
        'the TokenVault API listens beyond loopback WITHOUT TLS (TOKEN_TAP_ALLOW_INSECURE_API=true): API keys and tokens cross the network in clear; set TOKEN_TAP_API_TLS_CERT/KEY (and _CLIENT_CA for mTLS)',
      );
    }
    logger.info(
      {
        listen,
        tls: config.tls ? (config.tls.clientCa ? 'mtls' : 'tls') : 'none',
        auditCommit: config.auditRelaxedCommit ? 'relaxed' : `durable (synchronous_commit ${dependencies.commitDurability ?? 'on'})`,
        idpClients: [...config.idpClients.keys()],
      },
      'TokenVault API ready',
    );
    setImmediate(preloadWire);
  }

  return {
    address,
    /** Refuses new calls; calls in progress get `graceMs` (default 5 s) to finish. */
    async close(graceMs = 5_000) {
      if (server) await shutdownGrpcServer(server, graceMs);
    },
  };
}
