// A Prometheus metric made once per registry, whoever asks first.
import type { Registry } from 'prom-client';

/**
 * The metric already registered under `name` in `registry`, else a new one: a second TokenVault
 * API or hook started in one process (tests, a restart in place) must not register twice.
 */
export function registeredMetric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}
