// The sidecar's wiring, its one composition root: spool, pump, ext_proc thread, ops listener, the
// TokenVault API and the Okta hook, started and stopped in order. Pools, stores, the refresher and
// the audit logs are built here once and handed to the listeners, which create none. A library
// function, so tests and the CLI start the same thing.
import os from 'node:os';
import type { Logger } from 'pino';
import type pg from 'pg';
import { startTokenVault, type TokenVault } from './api/server.js';
import type { ObservedResponse } from './capture/types.js';
import { resolveRoute } from './config/route-idps.js';
import type { SidecarConfig } from './config/sidecar.js';
import { formatListenAddress, isLoopbackOnly, isSocket, type HostPort, type ListenAddress } from './config/values.js';
import { startExtProcListener, type ExtProcListener } from './extproc/listener.js';
import { startExtProcThread } from './extproc/thread.js';
import { CaptureIntake } from './ingest/intake.js';
import { CaptureRefusals } from './ingest/capture-refusals.js';
import { waitAtMost } from './lib/abortable-wait.js';
import { captureDispatch } from './ingest/dispatch.js';
import { SidecarHealth } from './ops/health.js';
import { startOpsServer, type OpsServer } from './ops/http.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPool, describeDatabaseUrl } from './store/pool.js';
import { CapturePump } from './ingest/pump.js';
import { CaptureSpool } from './ingest/spool.js';
import { StoreState } from './ingest/postgres-availability.js';
import { GrantStore } from './store/grants.js';
import { sealQuarantined } from './ingest/quarantine.js';
import { AccessEventLog } from './store/access-events.js';
import { schedulePurge } from './store/purge.js';
import { CaptureVerifier } from './idp/verify.js';
import { createApiMetrics } from './api/metrics.js';
import { GrantRefresher } from './operations/refresh.js';
import { GrantRevoker } from './operations/revoke.js';
import { drainRefreshes } from './operations/refresh-drain.js';
import type { HookServer } from './hook/server.js';
import { describeError } from './lib/error-description.js';
import { asError } from './lib/errors.js';
import { createPolicyMetrics } from './policy/metrics.js';
import { startRefreshTokenPolicy } from './policy/start.js';
import type { ExchangeServer } from './exchange/server.js';
import { lowerPriority } from './lib/process-priority.js';

export interface Sidecar {
  /** ext_proc's TCP address with the bound port; on a Unix socket, host is the socket path and port 0. */
  address: HostPort;
  /** What ext_proc listens on, as given (a bound port filled in). */
  listen: ListenAddress;
  metrics: Metrics;
  store: GrantStore;
  pump: CapturePump;
  storeState: StoreState;
  health: SidecarHealth;
  /** The /metrics, /healthz, /readyz listener; undefined when its address could not be bound. */
  ops: OpsServer | undefined;
  /** The TokenVault API and retention purge; `vault.address` is undefined when the API is off or unbound. */
  vault: TokenVault;
  /** Okta's token inline hook listener; undefined when it is off. */
  hook: HookServer | undefined;
  /** The RFC 8693 token exchange listener; undefined when it is off (or could not start). */
  exchange: ExchangeServer | undefined;
  /**
   * Resolves (never rejects) with the reason once the sidecar cannot go on: its spool stopped, the
   * spool directory no longer its own (its lock taken by another process). /healthz and /readyz
   * answer 503 from then on; the caller closes it and exits non-zero (`serve` does).
   */
  failed: Promise<string>;
  /**
   * Stops taking streams, lets open ones finish, and writes the spool to Postgres, all within
   * `graceMs` (default TOKEN_TAP_SHUTDOWN_GRACE_MS); what Postgres did not get stays in the spool.
   */
  close(graceMs?: number): Promise<void>;
}

export interface SidecarDependencies {
  logger: Logger;
  metrics?: Metrics;
  /** Test-only: run by the refresher once an IdP's answer is durable, before it is applied (cli/refresh-fault.ts). */
  afterRefreshAnswerDurable?: (tx: pg.PoolClient) => Promise<void>;
  /** A stop asked for during the start: ends a migration's wait for a lock, and the start throws MigrationAbortedError. */
  signal?: AbortSignal;
}

/**
 * The pump's verification step: id_tokens of IdPs with a pinned issuer are verified before they are
 * stored; the others are stored unverified, which the sidecar says at start and on first sight.
 */
function startVerifier(config: SidecarConfig, logger: Logger, metrics: Metrics): CaptureVerifier {
  const { idps, jwksCooldownMs, maxWaitMs } = config.verification;
  const refreshOnly = [...config.vault.idpClients.keys()].filter((idp) => !idps.has(idp));
  if (idps.size === 0) logger.warn('no IdP has an issuer in TOKEN_TAP_IDP_CONFIG: every id_token is stored unverified (grants say verified=false)');
  if (refreshOnly.length > 0) logger.warn({ idps: refreshOnly }, 'these IdPs have no issuer in TOKEN_TAP_IDP_CONFIG: their id_tokens are stored unverified');
  if (idps.size > 0) logger.info({ idps: [...idps.values()].map(({ idp, issuer }) => ({ idp, issuer })) }, 'id_tokens of these IdPs are verified before they are stored');
  return new CaptureVerifier({
    idps,
    cooldownMs: jwksCooldownMs,
    maxWaitMs,
    onFetch: ({ idp, ok, problem }) => {
      metrics.jwksFetches.inc({ idp, result: ok ? 'ok' : 'failed' });
      if (ok) logger.info({ idp }, 'fetched the IdP signing keys (JWKS)');
      else logger.warn({ idp, problem, retryInMs: jwksCooldownMs }, 'cannot fetch the IdP signing keys (JWKS); its captures wait in the spool');
    },
    onUnconfigured: (idp) => logger.warn({ idp }, 'IdP has no issuer in TOKEN_TAP_IDP_CONFIG: its id_tokens are stored unverified'),
  });
}

/**
 * The TokenVault API and what it works with: its own pool (a slow IdP holding refresh locks cannot
 * starve the capture writer), store, refresher (the spool its outbox), revoker, audit log and the
 * retention purge. Closing gives calls and refreshes in flight the grace, then ends the pool.
 */
async function startVault(config: SidecarConfig, spool: CaptureSpool, storeState: StoreState, logger: Logger, metrics: Metrics, afterRefreshAnswerDurable: SidecarDependencies['afterRefreshAnswerDurable']): Promise<{ vault: TokenVault; shared: VaultParts; stopPolicy: () => Promise<void> }> {
  const settings = config.vault;
  // An idle connection of the API's pool failing is an outage the refresher must know of (refresh-takeover.ts).
  let refresher: GrantRefresher | undefined;
  const pool = createPool({
    databaseUrl: config.databaseUrl,
    max: settings.poolSize,
    timeouts: settings.postgres,
    commitDurability: config.commitDurability,
    logger,
    onError: () => {
      metrics.postgresErrors.inc();
      refresher?.postgresLost();
    },
    applicationName: 'token-tap-api',
  });
  const store = new GrantStore(pool, config.keyRing, sealQuarantined);
  const apiMetrics = createApiMetrics(metrics.registry);
  const policyMetrics = createPolicyMetrics(metrics.registry, settings.idpClients.keys(), config.policy.policies.keys());
  refresher = new GrantRefresher({
    pool,
    store,
    clients: settings.idpClients,
    logger,
    onUpstream: (idp, outcome) => apiMetrics.upstreamRefreshes.inc({ idp, outcome }),
    onFieldRefused: (idp, field, action) => apiMetrics.refreshFieldsRefused.inc({ idp, field, action }),
    onFamilyRevoked: (idp) => policyMetrics.familyRevoked.inc({ idp }),
    postgresRegainedAt: () => storeState.regainedAt,
    // Half the pool size at most at IdPs at once; the rest queue.
    maxConcurrent: Math.max(1, Math.floor(settings.poolSize / 2)),
    applyWindowMs: settings.refreshApplyWindowMs,
    outbox: (refreshed) => spool.appendDurable(refreshed),
    // A refresh answer is a few KiB sealed; 64 KiB of room leaves a margin for larger ones.
    outboxReady: () => spool.hasRoomFor(64 * 1024),
    ...(afterRefreshAnswerDurable ? { afterAnswerDurable: afterRefreshAnswerDurable } : {}),
  });
  const revoker = new GrantRevoker({ pool, store, clients: settings.idpClients });
  const purge = settings.purgeIntervalMs !== undefined ? schedulePurge(pool, settings.retention, settings.purgeIntervalMs, logger) : undefined;
  const events = new AccessEventLog(pool, { relaxedCommit: settings.auditRelaxedCommit });
  const configuredIdps = [...settings.idpClients.keys(), ...config.verification.idps.keys()];
  const policy = startRefreshTokenPolicy(config.policy, { pool, refresher, revoker, events, configuredIdps, registry: metrics.registry, metrics: policyMetrics, logger });
  const api = await startTokenVault(settings, { pool, store, keyRing: config.keyRing, refresher, revoker, events, metrics: apiMetrics, logger, commitDurability: config.commitDurability });
  const running = refresher;
  const shared = { pool, store, refresher, events };
  const vault: TokenVault = {
    address: api.address,
    async close(graceMs = 5_000) {
      // New calls are refused; calls in progress, and the refreshes they started, get the whole
      // grace: a refresh cut after the IdP answered keeps its rotated token only in the spool.
      const apiClosed = api.close(graceMs);
      // The policy takes no new action; one waiting on another holder's refresh is answered by the drain.
      const policyStopped = policy.stop();
      await drainRefreshes(running, graceMs, logger);
      await Promise.all([apiClosed, policyStopped]);
      await purge?.stop();
      await pool.end().catch(() => undefined);
    },
  };
  // The first step of a stop: no rotation starts once it began (one in flight is waited for, as callers' are).
  const stopPolicy = () => (running.refusePolicyWork(), policy.stop());
  return { vault, shared, stopPolicy };
}

/** What the TokenVault API shares with the token exchange: one pool, one refresher (so one refresh per grant in this process), one audit log. */
interface VaultParts {
  pool: pg.Pool;
  store: GrantStore;
  refresher: GrantRefresher;
  events: AccessEventLog;
}

/**
 * The token exchange on the vault's pool, refresher and audit log; loaded (with jose) only when on.
 * A listener that cannot start is logged, and the sidecar goes on capturing without it (as with the API).
 */
async function startExchange(config: SidecarConfig, parts: VaultParts, logger: Logger, metrics: Metrics): Promise<ExchangeServer | undefined> {
  if (!config.exchange) return undefined;
  try {
    const { startTokenExchange } = await import('./exchange/start.js');
    const { pool, events } = parts;
    const common = { keysCooldownMs: config.verification.jwksCooldownMs, refusalSummaryMs: config.refusalSummaryMs, logger, registry: metrics.registry };
    return await startTokenExchange(config.exchange, { ...parts, ...common, audit: events, refusalAudit: new AccessEventLog(pool, { relaxedCommit: true }) });
  } catch (error) {
    logger.error({ err: describeError(error) }, 'the token exchange listener cannot start; capturing without it');
    return undefined;
  }
}

export async function startSidecar(config: SidecarConfig, dependencies: SidecarDependencies): Promise<Sidecar> {
  const { logger, metrics = createMetrics() } = dependencies;
  // Every configured IdP's series start at 0 now, not in the tick of its first response (a series born at 1 shows no increase()).
  for (const idp of new Set([...config.routeIdps.values(), ...config.verification.idps.keys(), ...config.vault.idpClients.keys()])) metrics.noteIdp(idp);
  if (!config.keyRing.fingerprintKey) {
    logger.warn(
      { activeKeyId: config.keyRing.activeKeyId },
      'TOKEN_TAP_FINGERPRINT_KEY is not set: token fingerprints follow the active key, so sidecars with different active keys (a key rollout) disagree on them; set it (openssl rand -base64 32), the same on every sidecar',
    );
  }
  const spool = await CaptureSpool.open({
    dir: config.spoolDir,
    maxBytes: config.spoolMaxBytes,
    fsyncIntervalMs: config.spoolFsyncMs,
    graceMs: config.spoolGraceMs,
    keyRing: config.keyRing,
    logger,
    metrics,
  });
  const pool: pg.Pool = createPool({
    databaseUrl: config.databaseUrl,
    max: config.poolSize,
    timeouts: config.postgres,
    commitDurability: config.commitDurability,
    logger,
    onError: () => metrics.postgresErrors.inc(),
  });
  const storeState = new StoreState({ pool, where: describeDatabaseUrl(config.databaseUrl), logger, metrics, ...(dependencies.signal ? { signal: dependencies.signal } : {}) });
  const store = new GrantStore(pool, config.keyRing, sealQuarantined);
  const verifier = startVerifier(config, logger, metrics);
  const pump = new CapturePump({ spool, writer: store, verification: verifier, store: storeState, logger, metrics });
  const listenText = formatListenAddress(config.listen);
  const extProcTls = config.extProcTls ? (config.extProcTls.clientCa ? 'mtls' : 'tls') : 'none';
  const health = new SidecarHealth(storeState, spool);
  const failed = spool.whenStopped().then((reason) => {
    const failure = `the capture spool stopped: ${reason}`;
    health.fail(failure);
    return failure;
  });
  // Responses that hold no token: the first of a kind per interval is spooled, the rest counted.
  const refusals = new CaptureRefusals({ store, logger, metrics, intervalMs: config.refusalSummaryMs });

  const onResponse = captureDispatch({
    resolveRoute: (observed) => resolveRoute(observed, config.routeIdps),
    maxBodyBytes: config.maxBodyBytes,
    refusals,
    pump,
    metrics,
    logger,
  });

  const intake = new CaptureIntake({ handle: onResponse, gatherMs: config.captureGatherMs, maxBacklog: config.captureBacklog, logger, metrics });
  const streams = { onResponse: (observed: ObservedResponse) => intake.take(observed), logger, metrics };
  let extProc: ExtProcListener;
  try {
    extProc = config.extProcThread
      ? await startExtProcThread(
          {
            listen: listenText,
            tls: config.extProcTls && { cert: config.extProcTls.cert.toString('utf8'), key: config.extProcTls.key.toString('utf8'), clientCa: config.extProcTls.clientCa?.toString('utf8') },
            maxBodyBytes: config.maxBodyBytes,
            logLevel: logger.level,
            maxBacklog: config.captureBacklog,
            nice: os.getPriority(0),
          },
          streams,
        )
      : await startExtProcListener(
          { listen: listenText, tls: config.extProcTls, maxBodyBytes: config.maxBodyBytes },
          streams,
        );
  } catch (error) {
    await spool.close();
    await pool.end().catch(() => undefined);
    throw new Error(`cannot listen on ${listenText}: ${asError(error).message}`, { cause: error });
  }
  if (!isLoopbackOnly(config.listen)) {
    // Allowed only with --allow-remote-extproc (config/sidecar.ts); said at every start.
    logger.warn(
      { listen: extProc.listen, tls: extProcTls },
      config.extProcTls?.clientCa
        ? 'ext_proc listens beyond loopback (--allow-remote-extproc); only clients with a certificate from TOKEN_TAP_EXTPROC_TLS_CLIENT_CA are served'
        : 'ext_proc listens beyond loopback WITHOUT mTLS (TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true): only the NetworkPolicy stands between the network and grants, anyone who reaches the port can write them; set TOKEN_TAP_EXTPROC_TLS_CERT, _KEY and _CLIENT_CA',
    );
  }
  health.describeExtProc({ listen: extProc.listen, tls: extProcTls });
  health.follow((serving) => extProc.setServing(serving));
  // TOKEN_TAP_CAPTURE_NICE: in observability mode Envoy never waits on the sidecar, so a niced
  // sidecar lets Envoy and the app get the CPU first. In buffered mode Envoy waits for replies, which
  // a nice would put last, unless they come from the ext_proc thread (TOKEN_TAP_EXTPROC_THREAD): it
  // exists already, and the nice changes the calling thread only, so it keeps the process's priority.
  lowerPriority(config.captureNice, (error) => logger.warn({ err: describeError(error), nice: config.captureNice }, 'cannot lower the sidecar priority; it competes with Envoy for the CPU'));
  const port = extProc.port;
  const address = isSocket(config.listen) ? { host: config.listen.socket, port: 0 } : { host: config.listen.host, port };
  const listen: ListenAddress = isSocket(config.listen) ? config.listen : address;
  // Serving before Postgres answers: logins are captured into the spool meanwhile.
  health.serving();
  logger.info({ listen: extProc.listen, tls: extProcTls, spool: config.spoolDir, commitDurability: config.commitDurability, nice: config.captureNice, extProcThread: extProc.tid }, 'ext_proc server ready');
  const ops = await startOpsServer({ listen: config.opsListen, metrics, health, logger });
  try {
    await storeState.prepare();
  } catch (error) {
    await extProc.close(0);
    intake.close();
    await ops?.close();
    await spool.close();
    await pool.end().catch(() => undefined);
    throw error;
  }
  pump.start();
  refusals.start();
  const { vault, shared, stopPolicy } = await startVault(config, spool, storeState, logger, metrics, dependencies.afterRefreshAnswerDurable);
  const exchange = await startExchange(config, shared, logger, metrics);
  let hook: HookServer | undefined;
  // The hook's own connections, so its reads never queue behind the capture writer's batches; one
  // connection in all (TOKEN_TAP_PG_POOL_SIZE=1, e.g. the demo's single-session embedded Postgres):
  // the hook shares it rather than open a second.
  const hookPool = config.hook && config.poolSize !== 1 ? createPool({ databaseUrl: config.databaseUrl, max: 4, logger, applicationName: 'token-tap-hook', onError: () => metrics.postgresErrors.inc() }) : pool;
  const endHookPool = () => (hookPool === pool ? Promise.resolve() : hookPool.end().catch(() => undefined));
  if (config.hook) {
    try {
      // Loaded only when configured: it brings jose (Okta's request signatures) with it.
      const { startHookServer } = await import('./hook/server.js');
      hook = await startHookServer({
        ...config.hook,
        store: new GrantStore(hookPool, config.keyRing, sealQuarantined),
        audit: new AccessEventLog(hookPool),
        refusalAudit: new AccessEventLog(hookPool, { relaxedCommit: true }),
        refusalSummaryMs: config.refusalSummaryMs,
        // A login whose response still waits in the intake counts as in flight too.
        captures: {
          hasInFlight: (idp: string) => intake.depth > 0 || pump.hasInFlight(idp),
          waitForIdp: async (idp: string, timeoutMs: number) => {
            const started = Date.now();
            await intake.whenHandled(timeoutMs);
            return pump.waitForIdp(idp, Math.max(0, timeoutMs - (Date.now() - started)));
          },
        },
        logger,
        registry: metrics.registry,
      });
    } catch (error) {
      await endHookPool();
      // As with the API: captures go on; Okta, getting no answer, issues its tokens unchanged.
      logger.error({ err: describeError(error) }, 'the Okta hook listener cannot start; capturing without it');
    }
  }

  // A listener that failed to start is only logged above; the gauge lets an alert see it.
  for (const [listener, configured, up] of [['api', config.vault.listen, vault.address], ['hook', config.hook, hook], ['exchange', config.exchange, exchange]] as const) {
    if (configured) metrics.listenerUp.set({ listener }, up ? 1 : 0);
  }
  let closing: Promise<void> | undefined;
  return {
    address,
    listen,
    metrics,
    store,
    pump,
    storeState,
    health,
    ops,
    vault,
    hook,
    exchange,
    failed,
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        const deadline = Date.now() + graceMs;
        health.stopping();
        const policyStopped = stopPolicy();
        // The API gets the whole grace: refreshes in flight finish (or are cut, logged) by then. The
        // exchange, on the API's pool and refresher, answers what it has taken first.
        const exchangeClosed = exchange ? waitAtMost(exchange.close(), Math.max(0, graceMs / 2)) : Promise.resolve();
        const vaultClosed = exchangeClosed.then(() => vault.close(Math.max(0, deadline - Date.now() - 250)));
        const hookClosed = hook?.close().then(endHookPool);
        // Open streams get half the grace period; the flush to Postgres the rest. Responses of
        // streams that ended are with the intake once the listener has closed.
        await extProc.close(Math.max(0, graceMs / 2));
        intake.close();
        // drain() fsyncs the spool first, so from here on nothing is lost, only left for later.
        const drained = await pump.drain(Math.max(0, deadline - Date.now()));
        // A write or connect stuck on a dead Postgres must not hold the process past its grace.
        const remaining = () => Math.max(250, deadline - Date.now());
        // The counts of summarised responses, after the first of each kind (in the pump's drain).
        await waitAtMost(refusals.close(), remaining());
        await waitAtMost(pump.close(), remaining());
        await waitAtMost(storeState.close(), remaining());
        // A refresh in flight may still have to spool the IdP's answer (its outbox): the API is
        // closed before the spool. What it spools now is replayed at the next start.
        await waitAtMost(Promise.all([policyStopped, vaultClosed]), remaining());
        await spool.close();
        if (drained) logger.info('every capture is in Postgres');
        else logger.warn({ spooled: spool.depth, spool: config.spoolDir }, 'stopping before every capture reached Postgres; the rest stays in the spool for the next start');
        await ops?.close();
        if (hookClosed) await waitAtMost(hookClosed, remaining());
        await waitAtMost(pool.end().catch(() => undefined), remaining());
      })();
      return closing;
    },
  };
}
