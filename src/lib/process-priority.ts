// Lowering the process's CPU priority (a nice value), for a process that should yield to others.
import os from 'node:os';
import { asError } from './errors.js';

/**
 * Raises the calling thread's niceness to at least `nice` (never lowers it); Linux only, where
 * setpriority(PRIO_PROCESS, 0) changes the calling thread alone. A failure is handed to `onFailure`.
 */
export function lowerPriority(nice: number, onFailure: (error: Error) => void): void {
  if (nice === 0 || process.platform !== 'linux') return;
  try {
    os.setPriority(0, Math.max(os.getPriority(0), nice));
  } catch (error) {
    onFailure(asError(error));
  }
}
