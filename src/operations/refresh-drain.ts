// Stopping the refresher: refreshes in flight get the whole grace, since a refresh cut after the IdP
// answered keeps its rotated token only in the spool (the outbox); what is cut is said.
import type { Logger } from 'pino';
import type { GrantRefresher } from './refresh.js';

export async function drainRefreshes(refresher: GrantRefresher, graceMs: number, logger: Logger): Promise<void> {
  const inFlight = refresher.inFlight();
  if (inFlight.length > 0)
    logger.info({ refreshesInFlight: inFlight.length, idps: [...new Set(inFlight)].sort(), graceMs }, 'stopping: waiting for refreshes in flight');
  const cut = await refresher.drain(graceMs);
  if (cut.length > 0) {
    logger.warn(
      { refreshesCut: cut.length, idps: [...new Set(cut)].sort(), graceMs },
      'stopping with refreshes still waiting on their IdP: an answer that comes after the exit is lost; their grants stay claimed until the claims expire, then another sidecar may refresh them',
    );
  } else if (inFlight.length > 0) {
    logger.info({ refreshesWaitedFor: inFlight.length }, 'the refreshes in flight at the stop finished');
  }
}
