// Test-only (TOKEN_TAP_FAULT_INJECTION, accepted only with NODE_ENV=test): a real crash, or a real
// terminated backend, after the IdP answered a refresh; once per process, as a crash or a failover
// comes. `serve` hands it to the sidecar's refresher; no server knows of it.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { RefreshFault } from '../config/token-vault.js';

export function injectedFault(fault: RefreshFault, logger: Logger): (tx: pg.PoolClient) => Promise<void> {
  let injected = false;
  return async (tx) => {
    if (injected) return;
    injected = true;
    logger.warn({ fault }, 'fault injection (TOKEN_TAP_FAULT_INJECTION)');
    if (fault === 'kill-after-refresh-answer') {
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => undefined);
    }
    await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
  };
}
