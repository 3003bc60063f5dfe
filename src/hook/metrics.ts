// Prometheus metrics of the Okta token inline hook, registered in the sidecar's registry. Labels
// carry outcomes and IdP names only, never a user, a claim or a secret.
import { Counter, Histogram, type Registry } from 'prom-client';
import { registeredMetric } from '../lib/registered-metric.js';
import { refusalsSummarisedCounter, REFUSALS_SUMMARISED } from '../ops/metrics.js';

/** The outcomes token_tap_okta_hook_calls_total and _call_seconds are counted with. */
const HOOK_OUTCOMES = [
  'patched',
  'no_provider',
  'no_user',
  'no_grant',
  'ambiguous',
  'unverified',
  'email_unverified',
  'unauthenticated',
  'bad_request',
  'internal',
];

export interface HookMetrics {
  calls: Counter<'idp' | 'outcome' | 'answer'>;
  callSeconds: Histogram<'outcome'>;
  /** Refused calls that got no access_events row of their own (counted into a summary row). */
  refusalsSummarised: Counter<'source' | 'outcome'>;
}

export function createHookMetrics(registry: Registry): HookMetrics {
  const registers = [registry];
  const metrics: HookMetrics = {
    calls: registeredMetric(
      registry,
      'token_tap_okta_hook_calls_total',
      () =>
        new Counter({
          name: 'token_tap_okta_hook_calls_total',
          help: 'Okta token inline hook calls, by token-tap IdP ("" when none matched), outcome (patched, no_provider, no_user, no_grant, ambiguous, unverified, email_unverified, unauthenticated, bad_request, internal) and answer (commands, none, error, refused).',
          labelNames: ['idp', 'outcome', 'answer'],
          registers,
        }),
    ),
    callSeconds: registeredMetric(
      registry,
      'token_tap_okta_hook_call_seconds',
      () =>
        new Histogram({
          name: 'token_tap_okta_hook_call_seconds',
          help: 'Time to answer an Okta token inline hook call, wait for an in-flight capture and audit write included.',
          labelNames: ['outcome'],
          // 3: Okta waits 3 s for the hook, then issues its tokens unchanged (the alert's threshold).
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 3, 5],
          registers,
        }),
    ),
    refusalsSummarised: registeredMetric(registry, REFUSALS_SUMMARISED, () => refusalsSummarisedCounter(registry)),
  };
  // Started at 0, so an alert's increase() sees the first failure or slow call (a series born at 1 shows none).
  for (const outcome of HOOK_OUTCOMES) metrics.callSeconds.zero({ outcome });
  return metrics;
}
