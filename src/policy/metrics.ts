// Prometheus metrics of refresh-token hygiene. Labels carry IdP names, actions and outcomes only.
// The report's figures are gauges read from Postgres when /metrics is scraped (one aggregate query,
// shared by every gauge of one scrape and reused for `cacheMs`), so no sidecar keeps them in memory.
import { Counter, Gauge, type Registry } from 'prom-client';
import { registeredMetric } from '../lib/registered-metric.js';
import { parseDuration } from '../config/refresh-token-policy.js';
import type { ReportLine } from './report.js';

export interface PolicyMetrics {
  actions: Counter<'idp' | 'action' | 'outcome'>;
  familyRevoked: Counter<'idp'>;
}

/** The outcomes TokenTapPolicyActionsFailing counts (a VaultError's, or internal): started at 0 for each IdP with a policy. */
const FAILED_OUTCOMES = ['invalid_argument', 'not_found', 'failed_precondition', 'unauthenticated', 'permission_denied', 'unavailable', 'internal'] as const;

/**
 * `idps`: the IdPs the vault refreshes; `policyIdps`: those with a refresh_token_policy. Their counters
 * start at 0, so a first event shows in increase().
 */
export function createPolicyMetrics(registry: Registry, idps: Iterable<string> = [], policyIdps: Iterable<string> = []): PolicyMetrics {
  const registers = [registry];
  const metrics: PolicyMetrics = {
    actions: registeredMetric(
      registry,
      'token_tap_policy_actions_total',
      () =>
        new Counter({
          name: 'token_tap_policy_actions_total',
          help: 'Actions of the refresh-token policy, by IdP, action (rotate, expire) and outcome (ok, skipped: not due any more when locked, revoke_failed: erased in the vault though the IdP refused the revocation, or a VaultError outcome).',
          labelNames: ['idp', 'action', 'outcome'],
          registers,
        }),
    ),
    familyRevoked: registeredMetric(
      registry,
      'token_tap_refresh_family_revoked_total',
      () =>
        new Counter({
          name: 'token_tap_refresh_family_revoked_total',
          help: "Vault refreshes refused with invalid_grant at an IdP seen rotating refresh tokens: another holder (Okta, or a copy) spent the token and the IdP's reuse detection may have revoked the family.",
          labelNames: ['idp'],
          registers,
        }),
    ),
  };
  for (const idp of idps) metrics.familyRevoked.inc({ idp }, 0);
  for (const idp of policyIdps)
    for (const action of ['rotate', 'expire']) for (const outcome of FAILED_OUTCOMES) metrics.actions.inc({ idp, action, outcome }, 0);
  return metrics;
}

/** The gauges of the report, and which field of a ReportLine each shows. */
const GAUGES: Array<{ name: string; help: string; value: (line: ReportLine) => number | null }> = [
  { name: 'token_tap_report_grants', help: 'Grants stored, by IdP.', value: (line) => line.grants },
  { name: 'token_tap_report_active_grants', help: 'Active grants (not revoked), by IdP.', value: (line) => line.active },
  { name: 'token_tap_report_refresh_tokens', help: 'Active grants holding a refresh token, by IdP.', value: (line) => line.with_refresh_token },
  {
    name: 'token_tap_report_rotates_refresh_tokens',
    help: 'Whether refresh answers of the IdP carry a new refresh token: 1 yes, 0 no, -1 not known yet (no refresh seen).',
    value: (line) => (line.rotates_refresh_tokens === null ? -1 : line.rotates_refresh_tokens ? 1 : 0),
  },
  {
    name: 'token_tap_report_refresh_token_expiry_known',
    help: 'Active grants whose refresh token has an expiry the IdP gave, by IdP.',
    value: (line) => line.refresh_token_expiry_known,
  },
  {
    name: 'token_tap_report_oldest_refresh_token_age_seconds',
    help: 'Age of the oldest refresh token held, by IdP (absent without one).',
    value: (line) => line.oldest_refresh_token_age_seconds,
  },
  {
    name: 'token_tap_report_oldest_chain_age_seconds',
    help: "Age of the oldest refresh-token chain held (since the login that began it), counted as the policy's max_age counts it, by IdP (absent without one).",
    value: (line) => line.oldest_chain_age_seconds,
  },
  {
    name: 'token_tap_report_policy_max_age_seconds',
    help: "The IdP's refresh_token_policy.max_age in seconds (absent without one): an alert compares the oldest chain age with it.",
    value: (line) => {
      const ms = line.policy?.max_age === undefined ? undefined : parseDuration(line.policy.max_age);
      return ms === undefined ? null : ms / 1000;
    },
  },
  { name: 'token_tap_report_verified_grants', help: 'Grants whose id_token was verified before it was stored, by IdP.', value: (line) => line.verified },
  {
    name: 'token_tap_report_rotations_seen',
    help: 'Refresh answers that carried a new refresh token, over the grants stored, by IdP.',
    value: (line) => line.rotations_seen,
  },
  {
    name: 'token_tap_report_last_capture_timestamp_seconds',
    help: 'When the last interactive login of the IdP was captured (Unix seconds).',
    value: (line) => (line.last_capture_at ? Date.parse(line.last_capture_at) / 1000 : null),
  },
];

/**
 * Registers the report gauges; each scrape reads `report()` once (reused for `cacheMs`). A failing
 * read leaves the gauges empty for that scrape and is logged by the caller's `onError`.
 */
export function registerReportGauges(
  registry: Registry,
  report: () => Promise<ReportLine[]>,
  options: { cacheMs: number; onError: (error: unknown) => void },
): void {
  let cached: { at: number; lines: Promise<ReportLine[]> } | undefined;
  const read = (): Promise<ReportLine[]> => {
    if (!cached || Date.now() - cached.at > options.cacheMs) {
      const lines = report().catch((error: unknown) => {
        options.onError(error);
        cached = undefined;
        return [];
      });
      cached = { at: Date.now(), lines };
    }
    return cached.lines;
  };
  for (const gauge of GAUGES) {
    registeredMetric(
      registry,
      gauge.name,
      () =>
        new Gauge({
          name: gauge.name,
          help: gauge.help,
          labelNames: ['idp'],
          registers: [registry],
          async collect() {
            this.reset();
            for (const line of await read()) {
              const value = gauge.value(line);
              if (value !== null) this.set({ idp: line.idp }, value);
            }
          },
        }),
    );
  }
}
