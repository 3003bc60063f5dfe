// The real ext_proc thread, which throws once, 300 ms after it starts, if the file named by
// TOKEN_TAP_TEST_CRASH_MARKER exists (and removes it, so the thread started again stays up).
import { existsSync, unlinkSync } from 'node:fs';

await import('../../src/extproc/worker.js');
const marker = process.env.TOKEN_TAP_TEST_CRASH_MARKER;
if (marker && existsSync(marker)) {
  unlinkSync(marker);
  setTimeout(() => {
    throw new Error('the ext_proc thread fails on purpose (test)');
  }, 300);
}
