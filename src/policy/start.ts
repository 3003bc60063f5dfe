// Refresh-token hygiene in `serve`: the policy runner and the report's gauges, on what the
// composition root (sidecar.ts) hands in: the vault's pool, refresher, revoker and audit log.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { PolicyConfig } from '../config/sidecar.js';
import { describeError } from '../lib/error-description.js';
import { readIdpFigures, readPolicyActions } from '../store/refresh-token-report.js';
import type { PolicyMetrics } from './metrics.js';
import { registerReportGauges } from './metrics.js';
import { buildReport } from './report.js';
import { PolicyRunner, type PolicyRunnerOptions } from './runner.js';

/** How long one reading of the report's figures serves scrapes. */
const REPORT_CACHE_MS = 10_000;

export interface PolicyDependencies {
  pool: pg.Pool;
  refresher: PolicyRunnerOptions['refresher'];
  revoker: PolicyRunnerOptions['revoker'];
  events: PolicyRunnerOptions['events'];
  /** IdPs of the IdP file (they have a line in the report even without grants). */
  configuredIdps: Iterable<string>;
  registry: Registry;
  metrics: PolicyMetrics;
  logger: Logger;
}

export function startRefreshTokenPolicy(config: PolicyConfig, dependencies: PolicyDependencies): PolicyRunner {
  const { pool, metrics, logger } = dependencies;
  const configured = [...dependencies.configuredIdps];
  registerReportGauges(dependencies.registry, async () => buildReport(await readIdpFigures(pool), await readPolicyActions(pool), config.policies, configured), {
    cacheMs: REPORT_CACHE_MS,
    onError: (error) => logger.warn({ err: describeError(error) }, 'cannot read the refresh-token report figures for /metrics'),
  });
  const runner = new PolicyRunner({
    pool,
    policies: config.policies,
    refresher: dependencies.refresher,
    revoker: dependencies.revoker,
    events: dependencies.events,
    intervalMs: config.intervalMs,
    maxPerRun: config.maxPerRun,
    maxPerIdp: config.maxPerIdp,
    onAction: (idp, action, outcome) => metrics.actions.inc({ idp, action, outcome }),
    logger,
  });
  runner.start();
  return runner;
}
