// The sidecar started in the test runner's own process (startSidecar, as `token-tap serve` does),
// with its own spool folder (unless the env names one), an ephemeral ops port, and its logs in memory.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LevelWithSilent } from 'pino';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { startSidecar, type Sidecar } from '../../src/sidecar.js';
import { injectedFault } from '../../src/cli/refresh-fault.js';
import { memoryLogger } from './memory-log.js';

export interface InProcessSidecar {
  sidecar: Sidecar;
  /** What it logged, as text and as parsed lines. */
  log: ReturnType<typeof memoryLogger>;
  close(graceMs?: number): Promise<void>;
}

export async function startInProcessSidecar(env: Record<string, string>, level: LevelWithSilent = 'info'): Promise<InProcessSidecar> {
  const ownSpool = env.TOKEN_TAP_SPOOL_DIR ? undefined : mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
  const config = loadSidecarConfig(
    {
      ...(ownSpool ? { TOKEN_TAP_SPOOL_DIR: ownSpool } : {}),
      TOKEN_TAP_OPS_LISTEN: '127.0.0.1:0',
      // In the test runner's own process: its threads must keep their priority.
      TOKEN_TAP_CAPTURE_NICE: '0',
      ...env,
    },
    { listen: '127.0.0.1:0' },
  );
  const log = memoryLogger(level);
  // The test-only refresh fault (TOKEN_TAP_FAULT_INJECTION, NODE_ENV=test) is handed in as `serve` hands it.
  const fault = config.vault.faultInjection;
  const sidecar = await startSidecar(config, { logger: log.logger, ...(fault ? { afterRefreshAnswerDurable: injectedFault(fault, log.logger) } : {}) });
  return {
    sidecar,
    log,
    async close(graceMs = 2_000) {
      await sidecar.close(graceMs);
      if (ownSpool) rmSync(ownSpool, { recursive: true, force: true });
    },
  };
}
