// Capture dispatch: what the intake does with each finished response. Its IdP is named by the
// route (or the response is counted and logged, not stored); a token response is read as one, a
// profile response as a profile; what holds a token goes to the pump, the rest to the refusal
// summary. Route resolution is handed in (config/route-idps.ts, by sidecar.ts), as are the pump and
// the summary.
import type { Logger } from 'pino';
import { captureFrom } from '../capture/capture.js';
import { profileCaptureFrom } from '../capture/profile.js';
import type { Capture, ObservedResponse } from '../capture/types.js';
import type { Count, LabelledCount } from './metrics.js';

export interface CaptureDispatchOptions {
  /** The IdP a response's route names, if any, and what it was looked up by (for the log line: never a token). */
  resolveRoute: (observed: ObservedResponse) => { idp: string | undefined; keys: readonly string[] };
  /** Decoded body bytes a reading may hold (TOKEN_TAP_MAX_BODY_BYTES). */
  maxBodyBytes: number;
  /** The summary of responses that hold no token: true when this one is to be spooled (ingest/capture-refusals.ts). */
  refusals: { admit(capture: Capture): boolean };
  pump: { enqueue(capture: Capture): void };
  /** noteIdp: the IdP's counters start at 0, so its first event shows in increase() (the alert rules). */
  metrics: { unnamedRoutes: Count; captures: LabelledCount<'idp' | 'outcome'>; noteIdp(idp: string): void };
  logger: Pick<Logger, 'warn' | 'debug'>;
}

/** The intake's handler (ingest/intake.ts): one response at a time, in arrival order. */
export function captureDispatch(options: CaptureDispatchOptions): (observed: ObservedResponse) => void {
  const { maxBodyBytes, refusals, pump, metrics, logger } = options;
  return (observed) => {
    const route = options.resolveRoute(observed);
    if (!route.idp) {
      metrics.unnamedRoutes.inc();
      logger.warn(
        { httpStatus: observed.status, routeName: observed.routeName, routeKeys: route.keys },
        'token response on a route that names no IdP (no x-token-tap-idp metadata, no TOKEN_TAP_ROUTE_IDPS entry for the route); not stored',
      );
      return;
    }
    const named = { ...observed, idp: route.idp };
    metrics.noteIdp(route.idp);
    if (observed.routeKind === 'token') {
      const capture = captureFrom(named, { maxDecodedBytes: maxBodyBytes });
      if (refusals.admit(capture)) pump.enqueue(capture);
      return;
    }
    const reading = profileCaptureFrom(named, { maxDecodedBytes: maxBodyBytes });
    // A profile refused by its bounds, or cut short, holds no token: summarised as token responses are.
    if (reading.kind === 'capture') {
      if (refusals.admit(reading.capture)) pump.enqueue(reading.capture);
    } else {
      metrics.captures.inc({ idp: route.idp, outcome: 'profile_skipped' });
      logger.debug({ idp: route.idp, reason: reading.reason }, 'profile response not used');
    }
  };
}
