// Prometheus metrics. Labels carry IdP names and outcomes only, never token material.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ScrapedLevel } from '../ingest/metrics.js';
import { registerNodeMetrics } from './node-metrics.js';

export interface Metrics {
  registry: Registry;
  captures: Counter<'idp' | 'outcome'>;
  capturesDropped: Counter<'reason'>;
  capturesQuarantined: Counter<'idp' | 'reason'>;
  unnamedRoutes: Counter;
  extProcStreamsOpen: Gauge;
  extProcStreamErrors: Counter;
  extProcStreamsIncomplete: Counter;
  extProcStreams: Counter;
  queueDepth: Gauge;
  intakeDepth: Gauge;
  writeBatchSeconds: Histogram;
  postgresErrors: Counter;
  spoolBytes: Gauge;
  spoolRecordsHeld: Gauge<'reason' | 'key_id'>;
  spoolHeldBytes: Gauge;
  spoolRecordsHeldTotal: Counter<'reason' | 'key_id'>;
  spoolAppended: Counter;
  spoolFsyncSeconds: Histogram;
  postgresUp: Gauge;
  /** 1 a configured listener (api, hook, exchange) listens, 0 it failed to start; no series for one that is off. */
  listenerUp: Gauge<'listener'>;
  jwksFetches: Counter<'idp' | 'result'>;
  refusalsSummarised: Counter<'source' | 'outcome'>;
  spoolMaxBytes: Gauge;
  spoolWaitingBytes: Gauge;
  captureOldestWaitingSeconds: ScrapedLevel;
  captureLastStored: Gauge<'idp'>;
  /**
   * Starts an IdP's alerting series at 0 the first time one of its responses is seen: a counter
   * series that appears already at 1 shows no increase() to a rule, so its first refusal,
   * quarantine or failed key fetch would page no one.
   */
  noteIdp(idp: string): void;
}

/** Every reason token_tap_captures_dropped_total is counted with, started at 0 (see noteIdp). */
export const DROP_REASONS = [
  'spool_full',
  'spool_write_failed',
  'spool_stopped',
  'shutting_down',
  'spool_encode_failed',
  'capture_backlog_full',
  'capture_failed',
  'jwks_unavailable',
] as const;
const IDP_OUTCOMES = ['stored', 'idp_error', 'unparseable', 'too_large', 'incomplete', 'no_subject', 'unverified'] as const;
const QUARANTINE_REASONS = ['refused_by_postgres', 'unreadable', 'failed'] as const;
/** IdP names come from Envoy's routes; past this many, no more are started at 0 (a bound on series, not on counting). */
const MAX_NOTED_IDPS = 1_000;

export const REFUSALS_SUMMARISED = 'token_tap_refusals_summarised_total';

/** Shared by the capture path (here) and the Okta hook (hook/metrics.ts), whichever registers first. */
export function refusalsSummarisedCounter(registry: Registry): Counter<'source' | 'outcome'> {
  return new Counter({
    name: REFUSALS_SUMMARISED,
    help: 'Refusals that got no row of their own but were counted into a summary row (TOKEN_TAP_REFUSAL_SUMMARY_MS), by source (okta_hook: access_events; capture: capture_events) and outcome. The calls and captures themselves are in token_tap_okta_hook_calls_total and token_tap_captures_total.',
    labelNames: ['source', 'outcome'],
    registers: [registry],
  });
}

/**
 * `defaultMetrics`: Node's process metrics as well (serve has them); `gcMetrics`: with them, the GC
 * duration histogram (TOKEN_TAP_GC_METRICS, off: a callback per GC, see node-metrics.ts).
 */
export function createMetrics(options: { defaultMetrics?: boolean; gcMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) registerNodeMetrics(registry, { prefix: 'token_tap_', gc: options.gcMetrics ?? false });
  const registers = [registry];
  let readOldestWaiting: () => number = () => 0;
  const noted = new Set<string>();
  const metrics: Metrics = {
    registry,
    captures: new Counter({
      name: 'token_tap_captures_total',
      help: 'Token responses seen, by IdP and outcome (stored, idp_error, unparseable, too_large, incomplete, no_subject, unverified, erased: a login of a user erased after it was observed).',
      labelNames: ['idp', 'outcome'],
      registers,
    }),
    capturesDropped: new Counter({
      name: 'token_tap_captures_dropped_total',
      help: 'Captures dropped before reaching Postgres, by reason. Spool records that cannot be read are not dropped: they are held (token_tap_spool_records_held).',
      labelNames: ['reason'],
      registers,
    }),
    capturesQuarantined: new Counter({
      name: 'token_tap_captures_quarantined_total',
      help: 'Captures set aside in quarantined_captures instead of blocking the writer, by IdP and reason: refused_by_postgres (a value Postgres refuses alone, e.g. over the btree limit), unreadable (a held grant the key ring cannot open), failed (anything else, verification included). List and retry them with token-tap captures.',
      labelNames: ['idp', 'reason'],
      registers,
    }),
    jwksFetches: new Counter({
      name: 'token_tap_jwks_fetches_total',
      help: 'Fetches of an IdP signing key set (discovery and JWKS), by IdP and result (ok, failed).',
      labelNames: ['idp', 'result'],
      registers,
    }),
    unnamedRoutes: new Counter({
      name: 'token_tap_unnamed_route_responses_total',
      help: 'Responses on a route whose ext_proc settings name no IdP; not stored.',
      registers,
    }),
    listenerUp: new Gauge({
      name: 'token_tap_listener_up',
      help: 'Whether a configured listener (api, hook, exchange) listens (1) or failed to start (0, the log says why); absent for one that is off. The sidecar goes on capturing without a failed one.',
      labelNames: ['listener'],
      registers,
    }),
    extProcStreamsOpen: new Gauge({ name: 'token_tap_extproc_streams_open', help: 'ext_proc streams open now.', registers }),
    extProcStreams: new Counter({
      name: 'token_tap_extproc_streams_total',
      help: 'ext_proc streams Envoy opened to the sidecar (one per token or profile call).',
      registers,
    }),
    extProcStreamsIncomplete: new Counter({
      name: 'token_tap_extproc_streams_incomplete_total',
      help: 'ext_proc streams that ended before the whole response reached the sidecar (Envoy reset them, e.g. after deferred_close_timeout while the sidecar lagged): a login captured partly or not at all.',
      registers,
    }),
    extProcStreamErrors: new Counter({
      name: 'token_tap_extproc_stream_errors_total',
      help: 'ext_proc streams that ended with an error other than CANCELLED.',
      registers,
    }),
    queueDepth: new Gauge({ name: 'token_tap_capture_queue_depth', help: 'Captures waiting to be written to Postgres.', registers }),
    intakeDepth: new Gauge({
      name: 'token_tap_capture_intake_depth',
      help: 'Finished responses in memory waiting for capture work (parsing, sealing, the spool); a SIGKILL loses them.',
      registers,
    }),
    writeBatchSeconds: new Histogram({
      name: 'token_tap_write_batch_seconds',
      help: 'Time to write one batch of captures to Postgres.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    postgresErrors: new Counter({ name: 'token_tap_postgres_errors_total', help: 'Failed Postgres operations.', registers }),
    spoolBytes: new Gauge({
      name: 'token_tap_spool_bytes',
      help: 'Bytes the capture spool holds on disk and in its write buffer (segments kept for the grace window included).',
      registers,
    }),
    spoolRecordsHeld: new Gauge({
      name: 'token_tap_spool_records_held',
      help:
        'Spool records moved aside into held/ in the spool directory, never deleted, by reason: key_missing (sealed under key_id, which TOKEN_TAP_KEYS lacks: replayed at a start once the key is back), ' +
        'key_mismatch (sealed under key_id, which TOKEN_TAP_KEYS has with other material: replayed at a start once the right key is back under that id), ' +
        'unreadable (they fail authentication or do not decode), damaged_segment (segments whose framing is damaged, one per segment: what follows the damage cannot be counted).',
      labelNames: ['reason', 'key_id'],
      registers,
    }),
    spoolHeldBytes: new Gauge({
      name: 'token_tap_spool_held_bytes',
      help: 'Bytes of held/ in the spool directory (what the spool could not read, kept): outside TOKEN_TAP_SPOOL_MAX_BYTES, and never deleted by the sidecar.',
      registers,
    }),
    spoolRecordsHeldTotal: new Counter({
      name: 'token_tap_spool_records_held_total',
      help: 'Spool records this process moved aside into held/, by reason (as token_tap_spool_records_held).',
      labelNames: ['reason', 'key_id'],
      registers,
    }),
    spoolAppended: new Counter({ name: 'token_tap_spool_captures_total', help: 'Captures written to the spool and fsynced.', registers }),
    spoolFsyncSeconds: new Histogram({
      name: 'token_tap_spool_fsync_seconds',
      help: 'Time to write and fsync one group of captures to the spool.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    postgresUp: new Gauge({ name: 'token_tap_postgres_up', help: '1 when the last Postgres write (or schema check) succeeded, else 0.', registers }),
    refusalsSummarised: refusalsSummarisedCounter(registry),
    spoolMaxBytes: new Gauge({
      name: 'token_tap_spool_max_bytes',
      help: "The spool's size cap (TOKEN_TAP_SPOOL_MAX_BYTES): at it, new captures are dropped.",
      registers,
    }),
    spoolWaitingBytes: new Gauge({
      name: 'token_tap_spool_waiting_bytes',
      help: 'Bytes of the spool that count toward TOKEN_TAP_SPOOL_MAX_BYTES: token_tap_spool_bytes less the segments already in Postgres kept for the grace window (a full spool gives those up first).',
      registers,
    }),
    captureOldestWaitingSeconds: (() => {
      new Gauge({
        name: 'token_tap_capture_oldest_waiting_seconds',
        help: "Age (since Envoy saw its response) of the oldest capture in the batch the writer holds for Postgres, 0 when none waits: grows while Postgres is away. Captures put back in the spool to wait for their IdP's keys are not counted (token_tap_jwks_fetches_total shows that wait).",
        registers,
        collect() {
          this.set(readOldestWaiting());
        },
      });
      return { readWith: (read: () => number) => void (readOldestWaiting = read) };
    })(),
    captureLastStored: new Gauge({
      name: 'token_tap_capture_last_stored_timestamp_seconds',
      help: 'Unix time at which this sidecar last stored a capture of the IdP (outcome stored) in Postgres.',
      labelNames: ['idp'],
      registers,
    }),
    noteIdp(idp: string) {
      if (noted.has(idp) || noted.size >= MAX_NOTED_IDPS) return;
      noted.add(idp);
      for (const outcome of IDP_OUTCOMES) metrics.captures.inc({ idp, outcome }, 0);
      for (const reason of QUARANTINE_REASONS) metrics.capturesQuarantined.inc({ idp, reason }, 0);
      for (const result of ['ok', 'failed']) metrics.jwksFetches.inc({ idp, result }, 0);
    },
  };
  for (const reason of DROP_REASONS) metrics.capturesDropped.inc({ reason }, 0);
  return metrics;
}
