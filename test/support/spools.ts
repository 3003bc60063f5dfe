// Opening real spools in tests: each with a memory log and its own metrics, no grace window unless a
// test asks for one, and every one opened closed again by closeAll() (in afterEach).
import { CaptureSpool, type SpoolOptions } from '../../src/ingest/spool.js';
import type { KeyRing } from '../../src/keys/key-ring.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { memoryLogger } from './memory-log.js';

export function spoolOpener(defaults: () => { dir: string; keyRing: KeyRing; fsyncIntervalMs: number }) {
  const opened: CaptureSpool[] = [];
  async function openSpool(overrides: Partial<SpoolOptions> = {}) {
    const log = memoryLogger();
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ maxBytes: 16 * 1024 * 1024, logger: log.logger, metrics, graceMs: 0, ...defaults(), ...overrides });
    opened.push(spool);
    return { spool, log, metrics };
  }
  async function closeAll(): Promise<void> {
    for (const spool of opened.splice(0)) await spool.close();
  }
  return { openSpool, closeAll, opened };
}
