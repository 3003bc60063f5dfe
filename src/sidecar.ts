// The sidecar's wiring: spool, pump, ext_proc thread, ops listener and TokenVault API, started
// and stopped in order. A library function, so tests and the CLI start the same thing.
import os from 'node:os';
import type { Logger } from 'pino';
import type pg from 'pg';
import { captureFrom } from './capture/capture.js';
import { profileCaptureFrom } from './capture/profile.js';
import { startTokenVault, type TokenVault } from './api/server.js';
import type { ObservedResponse } from './capture/types.js';
import type { SidecarConfig } from './config/sidecar.js';
import { formatHostPort, type HostPort } from './config/values.js';
import { startExtProcThread, type ExtProcThread } from './extproc/thread.js';
import { SidecarHealth } from './ops/health.js';
import { startOpsServer, type OpsServer } from './ops/http.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPool, describeDatabaseUrl } from './store/pool.js';
import { CapturePump } from './ingest/pump.js';
import { CaptureSpool } from './ingest/spool.js';
import { StoreState } from './ingest/postgres-availability.js';
import { GrantStore } from './store/grants.js';

export interface Sidecar {
  address: HostPort;
  metrics: Metrics;
  store: GrantStore;
  pump: CapturePump;
  storeState: StoreState;
  health: SidecarHealth;
  /** The /metrics, /healthz, /readyz listener; undefined when its address could not be bound. */
  ops: OpsServer | undefined;
  /** The TokenVault API and retention purge; `vault.address` is undefined when the API is off or unbound. */
  vault: TokenVault;
  /**
   * Stops taking streams, lets open ones finish, and writes the spool to Postgres, all within
   * `graceMs` (default TOKEN_TAP_SHUTDOWN_GRACE_MS); what Postgres did not get stays in the spool.
   */
  close(graceMs?: number): Promise<void>;
}

export interface SidecarDependencies {
  logger: Logger;
  metrics?: Metrics;
}

/** Waits for `promise`, but no longer than `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * Capture work (parsing, sealing, the spool, Postgres) is background work: on a busy machine the
 * ext_proc thread and Envoy get the CPU first, and captures catch up after the peak (bench/RESULTS.md).
 * On Linux setpriority(PRIO_PROCESS, 0) changes the calling thread only, and the ext_proc thread
 * exists already, so it keeps the process's priority. Threads started later inherit this one's.
 */
function lowerCapturePriority(nice: number, logger: Logger): void {
  if (nice === 0 || process.platform !== 'linux') return;
  try {
    os.setPriority(0, Math.max(os.getPriority(0), nice));
  } catch (error) {
    logger.warn({ err: { message: (error as Error).message }, nice }, 'cannot lower the capture thread priority; captures compete with ext_proc replies for the CPU');
  }
}

export async function startSidecar(config: SidecarConfig, { logger, metrics = createMetrics() }: SidecarDependencies): Promise<Sidecar> {
  const spool = await CaptureSpool.open({
    dir: config.spoolDir,
    maxBytes: config.spoolMaxBytes,
    fsyncIntervalMs: config.spoolFsyncMs,
    keyRing: config.keyRing,
    logger,
    metrics,
  });
  const pool: pg.Pool = createPool({ databaseUrl: config.databaseUrl, max: config.poolSize, timeouts: config.postgres, logger, onError: () => metrics.postgresErrors.inc() });
  const storeState = new StoreState({ pool, where: describeDatabaseUrl(config.databaseUrl), logger, metrics });
  const store = new GrantStore(pool, config.keyRing);
  const pump = new CapturePump({ spool, writer: store, store: storeState, logger, metrics });
  const health = new SidecarHealth(storeState, spool);

  const onResponse = (observed: ObservedResponse): void => {
    if (!observed.idp) {
      metrics.unnamedRoutes.inc();
      logger.warn({ httpStatus: observed.status }, 'token response on a route that names no IdP (no x-token-tap-idp metadata); not stored');
      return;
    }
    const named = { ...observed, idp: observed.idp };
    if (observed.routeKind === 'token') {
      pump.enqueue(captureFrom(named, { maxDecodedBytes: config.maxBodyBytes }));
      return;
    }
    const reading = profileCaptureFrom(named, { maxDecodedBytes: config.maxBodyBytes });
    if (reading.kind === 'capture') pump.enqueue(reading.capture);
    else {
      metrics.captures.inc({ idp: observed.idp, outcome: 'profile_skipped' });
      logger.debug({ idp: observed.idp, reason: reading.reason }, 'profile response not used');
    }
  };

  let extProc: ExtProcThread;
  try {
    extProc = await startExtProcThread(
      { listen: formatHostPort(config.listen), maxBodyBytes: config.maxBodyBytes, logLevel: logger.level, maxBacklog: config.captureBacklog, nice: os.getPriority(0) },
      { onResponse, logger, metrics },
    );
  } catch (error) {
    await spool.close();
    await pool.end().catch(() => undefined);
    throw new Error(`cannot listen on ${formatHostPort(config.listen)}: ${(error as Error).message}`, { cause: error });
  }
  health.follow((serving) => extProc.setServing(serving));
  lowerCapturePriority(config.captureNice, logger);
  const port = extProc.port;
  const address = { host: config.listen.host, port };
  // Serving before Postgres answers: logins are captured into the spool meanwhile.
  health.serving();
  logger.info({ listen: formatHostPort(address), spool: config.spoolDir, extProcThread: extProc.tid, captureNice: config.captureNice }, 'ext_proc server ready');
  const ops = await startOpsServer({ listen: config.opsListen, metrics, health, logger });
  try {
    await storeState.prepare();
  } catch (error) {
    await extProc.close(0);
    await ops?.close();
    await spool.close();
    await pool.end().catch(() => undefined);
    throw error;
  }
  pump.start();
  const vault = await startTokenVault(config.vault, { databaseUrl: config.databaseUrl, keyRing: config.keyRing, logger, registry: metrics.registry, onPostgresError: () => metrics.postgresErrors.inc() });

  let closing: Promise<void> | undefined;
  return {
    address,
    metrics,
    store,
    pump,
    storeState,
    health,
    ops,
    vault,
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        const deadline = Date.now() + graceMs;
        health.stopping();
        const vaultClosed = vault.close(Math.max(0, graceMs / 2));
        // Open streams get half the grace period; the flush to Postgres the rest. The thread
        // hands over the responses of streams that ended before it says it is closed.
        await extProc.close(Math.max(0, graceMs / 2));
        // drain() fsyncs the spool first, so from here on nothing is lost, only left for later.
        const drained = await pump.drain(Math.max(0, deadline - Date.now()));
        // A write or connect stuck on a dead Postgres must not hold the process past its grace.
        const remaining = () => Math.max(250, deadline - Date.now());
        await within(pump.close(), remaining());
        await within(storeState.close(), remaining());
        await spool.close();
        if (drained) logger.info('every capture is in Postgres');
        else logger.warn({ spooled: spool.depth, spool: config.spoolDir }, 'stopping before every capture reached Postgres; the rest stays in the spool for the next start');
        await ops?.close();
        await within(vaultClosed, remaining());
        await within(pool.end().catch(() => undefined), remaining());
      })();
      return closing;
    },
  };
}
