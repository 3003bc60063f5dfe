// Wiring only: the sidecar as a library function, so tests and the CLI start the same thing.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type pg from 'pg';
import { captureFrom } from './capture/capture.js';
import { profileCaptureFrom } from './capture/profile.js';
import type { ObservedResponse } from './capture/types.js';
import type { HostPort, SidecarConfig } from './config.js';
import { formatHostPort } from './config.js';
import { loadExtProc } from './extproc/protocol.js';
import { createExtProcHandlers } from './extproc/server.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPool, describeDatabaseUrl } from './vault/db.js';
import { migrate, SchemaTooNewError } from './vault/migrate.js';
import { CaptureQueue } from './vault/queue.js';
import { GrantStore } from './vault/store.js';

export interface Sidecar {
  address: HostPort;
  metrics: Metrics;
  store: GrantStore;
  queue: CaptureQueue;
  /** Stops taking streams, lets open ones finish, writes what is queued within `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

export interface SidecarDependencies {
  logger: Logger;
  metrics?: Metrics;
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port)));
  });
}

export async function startSidecar(config: SidecarConfig, { logger, metrics = createMetrics() }: SidecarDependencies): Promise<Sidecar> {
  const pool: pg.Pool = createPool({ databaseUrl: config.databaseUrl, max: config.poolSize, logger, onError: () => metrics.postgresErrors.inc() });
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end().catch(() => undefined);
    if (error instanceof SchemaTooNewError) throw error;
    throw new Error(`cannot prepare the Postgres schema at ${describeDatabaseUrl(config.databaseUrl)}: ${(error as Error).message}`, { cause: error });
  }
  const store = new GrantStore(pool, config.keyRing);
  const queue = new CaptureQueue({ writer: store, logger, metrics });

  const onResponse = (observed: ObservedResponse): void => {
    if (!observed.idp) {
      metrics.unnamedRoutes.inc();
      logger.warn({ httpStatus: observed.status }, 'token response on a route that names no IdP (no x-token-tap-idp metadata); not stored');
      return;
    }
    const named = { ...observed, idp: observed.idp };
    if (observed.routeKind === 'token') {
      queue.enqueue(captureFrom(named, { maxDecodedBytes: config.maxBodyBytes }));
      return;
    }
    const reading = profileCaptureFrom(named, { maxDecodedBytes: config.maxBodyBytes });
    if (reading.kind === 'capture') queue.enqueue(reading.capture);
    else {
      metrics.captures.inc({ idp: observed.idp, outcome: 'profile_skipped' });
      logger.debug({ idp: observed.idp, reason: reading.reason }, 'profile response not used');
    }
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': config.maxBodyBytes + 64 * 1024 });
  server.addService(loadExtProc().service, createExtProcHandlers({ limits: { maxBodyBytes: config.maxBodyBytes }, onResponse, logger, metrics }));
  let port: number;
  try {
    port = await bind(server, formatHostPort(config.listen));
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw new Error(`cannot listen on ${formatHostPort(config.listen)}: ${(error as Error).message}`, { cause: error });
  }
  const address = { host: config.listen.host, port };
  logger.info({ listen: formatHostPort(address) }, 'ext_proc server ready');

  return {
    address,
    metrics,
    store,
    queue,
    async close(graceMs = 5_000) {
      const deadline = Date.now() + graceMs;
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, Math.max(0, graceMs / 2));
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      // Streams that just ended hand their response off on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      const drained = await queue.drain(Math.max(0, deadline - Date.now()));
      queue.close();
      if (!drained) logger.error({ lost: queue.depth }, 'stopped before every capture reached Postgres');
      await pool.end().catch(() => undefined);
    },
  };
}
