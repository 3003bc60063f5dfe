// Before any test: the alert tests need Prometheus's own binaries (promtool for the rules' unit
// tests, prometheus for the end-to-end alerts). Found on PATH, or the run stops in one line saying
// what to install, as for Postgres (postgres-preflight.ts).
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export class PrometheusUnavailable extends Error {
  override name = 'PrometheusUnavailable';
}

export interface PrometheusBinaries {
  prometheus: string;
  promtool: string;
}

function onPath(command: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Both binaries, from `searchPath` (PATH by default); throws PrometheusUnavailable naming what is missing. */
export function prometheusBinaries(searchPath = process.env.PATH ?? ''): PrometheusBinaries {
  const prometheus = onPath('prometheus', searchPath);
  const promtool = onPath('promtool', searchPath);
  if (prometheus && promtool) return { prometheus, promtool };
  const missing = [prometheus ? undefined : 'prometheus', promtool ? undefined : 'promtool'].filter(Boolean).join(' and ');
  throw new PrometheusUnavailable(
    `${missing} not found on PATH (the alert tests run them): install Prometheus 2.x (Debian/Ubuntu: apt-get install --no-install-recommends prometheus, which brings both)`,
  );
}
