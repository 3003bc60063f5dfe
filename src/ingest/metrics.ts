// The metrics the ingest path keeps, as the narrow shapes it calls. The sidecar hands in its
// Prometheus metrics (ops/metrics.ts fits); tests can hand in anything of this shape.
export interface Count {
  inc(value?: number): void;
}

export interface LabelledCount<Label extends string> {
  inc(labels: Partial<Record<Label, string>>, value?: number): void;
}

export interface Level {
  set(value: number): void;
}

export interface LabelledLevel<Label extends string> {
  set(labels: Partial<Record<Label, string>>, value: number): void;
}

/** A level read when /metrics is scraped: an age grows with no event to set it. */
export interface ScrapedLevel {
  readWith(read: () => number): void;
}

export interface Timing {
  startTimer(): () => unknown;
}

export interface IngestMetrics {
  captures: LabelledCount<'idp' | 'outcome'>;
  capturesDropped: LabelledCount<'reason'>;
  /** Captures set aside in quarantined_captures: reason refused_by_postgres, unreadable or failed. */
  capturesQuarantined: LabelledCount<'idp' | 'reason'>;
  postgresErrors: Count;
  postgresUp: Level;
  writeBatchSeconds: Timing;
  spoolFsyncSeconds: Timing;
  spoolAppended: Count;
  queueDepth: Level;
  spoolBytes: Level;
  /** TOKEN_TAP_SPOOL_MAX_BYTES, and the bytes that count toward it (spoolBytes less the grace segments a full spool gives up). */
  spoolMaxBytes: Level;
  spoolWaitingBytes: Level;
  /** Age of the oldest capture the writer holds for Postgres; 0 when none waits. */
  captureOldestWaitingSeconds: ScrapedLevel;
  /** Unix time of the last capture stored per IdP. */
  captureLastStored: LabelledLevel<'idp'>;
  /** Spool records moved aside into held/ (never deleted), by reason (and key id for key_missing). */
  spoolRecordsHeld: LabelledLevel<'reason' | 'key_id'>;
  spoolRecordsHeldTotal: LabelledCount<'reason' | 'key_id'>;
  /** Bytes of held/ (outside the spool's size cap). */
  spoolHeldBytes: Level;
}
