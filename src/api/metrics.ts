// Prometheus metrics of the TokenVault API, registered in the sidecar's registry. Labels carry
// operation names, outcomes and IdP names only.
import { Counter, Histogram, type Registry } from 'prom-client';
import { registeredMetric } from '../lib/registered-metric.js';

export interface ApiMetrics {
  calls: Counter<'operation' | 'outcome'>;
  callSeconds: Histogram<'operation'>;
  upstreamRefreshes: Counter<'idp' | 'outcome'>;
  refreshFieldsRefused: Counter<'idp' | 'field' | 'action'>;
}

export function createApiMetrics(registry: Registry): ApiMetrics {
  const registers = [registry];
  return {
    calls: registeredMetric(
      registry,
      'token_tap_api_calls_total',
      () =>
        new Counter({
          name: 'token_tap_api_calls_total',
          help: 'TokenVault API calls, by operation and outcome (ok, unauthenticated, permission_denied, not_found, ...).',
          labelNames: ['operation', 'outcome'],
          registers,
        }),
    ),
    callSeconds: registeredMetric(
      registry,
      'token_tap_api_call_seconds',
      () =>
        new Histogram({
          name: 'token_tap_api_call_seconds',
          help: 'Time to answer a TokenVault API call, audit write included.',
          labelNames: ['operation'],
          buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
          registers,
        }),
    ),
    upstreamRefreshes: registeredMetric(
      registry,
      'token_tap_idp_refreshes_total',
      () =>
        new Counter({
          name: 'token_tap_idp_refreshes_total',
          help: 'Refresh requests sent to IdP token endpoints, by IdP and outcome (ok, invalid_grant, refused, unavailable).',
          labelNames: ['idp', 'outcome'],
          registers,
        }),
    ),
    refreshFieldsRefused: registeredMetric(
      registry,
      'token_tap_idp_refresh_fields_refused_total',
      () =>
        new Counter({
          name: 'token_tap_idp_refresh_fields_refused_total',
          help: 'Fields of IdP refresh answers over their bound or not storable, by IdP, field and action (dropped: the grant keeps its own, the rest is stored; set_aside: a token, the whole answer quarantined).',
          labelNames: ['idp', 'field', 'action'],
          registers,
        }),
    ),
  };
}
