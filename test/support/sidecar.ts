// Runs `token-tap serve` as a child process, as an operator would, and keeps its logs.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './ports.js';

export const CLI = fileURLToPath(new URL('../../../bin/token-tap.js', import.meta.url));

export interface SidecarProcess {
  port: number;
  pid: number;
  /** The /metrics, /healthz, /readyz port (an ephemeral one unless TOKEN_TAP_OPS_LISTEN is given). */
  opsPort: number;
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `listen` replaces the default 127.0.0.1:<port> (a unix:/path, say). */
export async function startSidecarProcess(options: { port: number; env: Record<string, string>; args?: string[]; listen?: string }): Promise<SidecarProcess> {
  // Each sidecar gets its own spool and ops port unless the test names them: test runs share the machine.
  const ownSpool = options.env.TOKEN_TAP_SPOOL_DIR ? undefined : mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
  const env = { ...(ownSpool ? { TOKEN_TAP_SPOOL_DIR: ownSpool } : {}), TOKEN_TAP_OPS_LISTEN: '127.0.0.1:0', ...options.env };
  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--listen', options.listen ?? `127.0.0.1:${options.port}`, ...(options.args ?? [])], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  child.stdout!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await waitFor('the sidecar to be ready', async () => {
      if (child.exitCode !== null) throw new Error(`token-tap serve exited with ${child.exitCode}:\n${logs}`);
      return logs.includes('ext_proc server ready') && /"opsListen"|cannot listen for \/metrics/.test(logs) ? true : undefined;
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const opsPort = Number(/"opsListen":"[^"]*:(\d+)"/.exec(logs)?.[1] ?? 0);
  return {
    port: options.port,
    pid: child.pid!,
    opsPort,
    logs: () => logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      if (ownSpool) rmSync(ownSpool, { recursive: true, force: true });
      return code;
    },
  };
}

/** Runs a token-tap command to completion. */
export async function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
