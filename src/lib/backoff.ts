// How long a retry loop waits after its Nth failed attempt.
export function backoffMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  // "Full jitter": spread retries of many sidecars over the whole window.
  return Math.max(1, Math.round(ceiling * random()));
}
