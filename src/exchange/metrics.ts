// Prometheus metrics of the token exchange, registered in the sidecar's registry. Labels carry IdP
// names (configured ones only) and outcomes, never a user, a key or a token.
import { Counter, Histogram, type Registry } from 'prom-client';
import { registeredMetric } from '../lib/registered-metric.js';
import { refusalsSummarisedCounter, REFUSALS_SUMMARISED } from '../ops/metrics.js';

export interface ExchangeMetrics {
  requests: Counter<'idp' | 'outcome'>;
  requestSeconds: Histogram<'outcome'>;
  refusalsSummarised: Counter<'source' | 'outcome'>;
}

export function createExchangeMetrics(registry: Registry): ExchangeMetrics {
  const registers = [registry];
  return {
    requests: registeredMetric(
      registry,
      'token_tap_exchange_requests_total',
      () =>
        new Counter({
          name: 'token_tap_exchange_requests_total',
          help: 'Token exchange requests (POST /oauth2/token), by token-tap IdP ("" when the audience names none configured) and outcome (ok, unauthenticated, bad_request, unauthorized_client, invalid_request, invalid_subject_token, invalid_target, wrong_idp, no_user, no_grant, ambiguous, unverified, email_unverified, no_token, refresh_refused, unavailable, internal).',
          labelNames: ['idp', 'outcome'],
          registers,
        }),
    ),
    requestSeconds: registeredMetric(
      registry,
      'token_tap_exchange_request_seconds',
      () =>
        new Histogram({
          name: 'token_tap_exchange_request_seconds',
          help: 'Time to answer a token exchange request, subject-token check, refresh and audit write included.',
          labelNames: ['outcome'],
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers,
        }),
    ),
    refusalsSummarised: registeredMetric(registry, REFUSALS_SUMMARISED, () => refusalsSummarisedCounter(registry)),
  };
}
