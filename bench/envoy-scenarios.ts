// What the Envoy benchmarks share (bench/run.ts, bench/instructions.ts): the stub IdP, the Envoy of
// each scenario (A: no ext_proc, B: observability, C: buffered; B0/C0 the same against the floor
// server) and the token request driven through it.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { ProcessingMode } from '../src/envoyconfig/options.js';
import { renderEnvoyConfig } from '../src/envoyconfig/render.js';
import { waitFor } from '../src/lib/wait-for.js';
import { freePort } from '../test/support/ports.js';
import type { Scenario } from './report.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The authorization-code token request every scenario sends (its answer is what gets captured). */
export const REQUEST = {
  body: 'grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&redirect_uri=https%3A%2F%2Fexample.okta.com%2Foauth2%2Fv1%2Fauthorize%2Fcallback',
  headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic b2t0YS1iZW5jaDpiZW5jaC1zZWNyZXQ=', accept: 'application/json' },
};

export function spawnNode(args: string[], env: Record<string, string>, logFile: string, inheritEnv = true): ChildProcess {
  return spawnProgram(process.execPath, args, env, logFile, inheritEnv);
}

/** `file` run as a program (its own #! line), output appended to logFile. */
export function spawnProgram(file: string, args: string[], env: Record<string, string>, logFile: string, inheritEnv = true): ChildProcess {
  const fd = openSync(logFile, 'a');
  return spawn(file, args, { env: inheritEnv ? { ...process.env, ...env } : env, stdio: ['ignore', fd, fd] });
}

export async function startStubIdp(logFile: string, delayMs = 0): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = spawnNode([path.join(ROOT, 'dist/bench/stub-idp.js'), String(port), String(delayMs)], {}, logFile);
  await waitFor('the stub IdP', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/token`, { method: 'POST' }).catch(() => undefined);
    return response?.ok ? true : undefined;
  });
  return { port, child };
}

export function envoyYaml(scenario: Scenario, idpPort: number, listenPort: number, sidecarPort: number, adminPort: number): string {
  const mode: ProcessingMode = scenario === 'C' || scenario === 'C0' ? 'buffered' : 'observability';
  const config = renderEnvoyConfig({
    idps: [{ name: 'bench', tokenUrl: new URL(`http://127.0.0.1:${idpPort}/token`) }],
    listen: { host: '127.0.0.1', port: listenPort },
    sidecar: { host: '127.0.0.1', port: sidecarPort },
    admin: { host: '127.0.0.1', port: adminPort },
    mode,
  }) as any;
  if (scenario === 'A') {
    // Envoy alone: the same config without the ext_proc filter.
    const hcm = config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    hcm.http_filters = hcm.http_filters.filter((filter: { name: string }) => filter.name !== 'envoy.filters.http.ext_proc');
    for (const route of hcm.route_config.virtual_hosts[0].routes) delete route.typed_per_filter_config;
  }
  return stringify(config);
}
