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
  /** Ends the process that started it (with `unreaped`, the one that leaves it a zombie). */
  stopParent(): Promise<void>;
}

// A parent that never reaps its child: once killed, the sidecar stays a zombie (its PID taken)
// until the parent goes, as under a container init that reaps late or never.
const UNREAPED_PARENT = `
import os, signal, sys, time
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
sys.stderr.write("unreaped child pid %d\\n" % pid)
sys.stderr.flush()
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
time.sleep(600)
`;

/**
 * `unreaped`: run it under a parent that does not reap it (see UNREAPED_PARENT); `pid` is the
 * sidecar's own, and after stop('SIGKILL') it stays a zombie until the parent is stopped too.
 */
/**
 * `listen` replaces the default 127.0.0.1:<port> (a unix:/path, say). `wrap` runs the sidecar through
 * a command that execs it (e.g. into a network namespace of its own: see IN_NEW_NETNS); `pid` is
 * then still the sidecar's, as long as `wrap` execs rather than forks.
 */
export async function startSidecarProcess(options: {
  port: number;
  env: Record<string, string>;
  args?: string[];
  listen?: string;
  unreaped?: boolean;
  wrap?: string[];
  /** How long it may take to be ready (10 s unless given; a sidecar under valgrind takes longer). */
  readyTimeoutMs?: number;
}): Promise<SidecarProcess> {
  // Each sidecar gets its own spool and ops port unless the test names them: test runs share the machine.
  const ownSpool = options.env.TOKEN_TAP_SPOOL_DIR ? undefined : mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
  const env = { ...(ownSpool ? { TOKEN_TAP_SPOOL_DIR: ownSpool } : {}), TOKEN_TAP_OPS_LISTEN: '127.0.0.1:0', ...options.env };
  const command = [...(options.wrap ?? []), process.execPath, CLI, 'serve', '--listen', options.listen ?? `127.0.0.1:${options.port}`, ...(options.args ?? [])];
  const child: ChildProcess = spawn(options.unreaped ? 'python3' : command[0]!, options.unreaped ? ['-c', UNREAPED_PARENT, ...command] : command.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  child.stdout!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    // A sidecar that exits before it is ready fails the start at once, not after the wait's timeout.
    const exitedEarly = exited.then((code) => {
      throw new Error(`token-tap serve exited with ${code}:\n${logs}`);
    });
    await Promise.race([
      exitedEarly,
      waitFor(
        'the sidecar to be ready',
        async () => (logs.includes('ext_proc server ready') && /"opsListen"|cannot listen for \/metrics/.test(logs) ? true : undefined),
        options.readyTimeoutMs,
      ),
    ]);
    exitedEarly.catch(() => undefined);
  } catch (error) {
    const unreaped = /unreaped child pid (\d+)/.exec(logs)?.[1];
    if (unreaped) process.kill(Number(unreaped), 'SIGKILL');
    child.kill('SIGKILL');
    throw error;
  }
  const opsPort = Number(/"opsListen":"[^"]*:(\d+)"/.exec(logs)?.[1] ?? 0);
  const unreapedPid = options.unreaped ? Number(/unreaped child pid (\d+)/.exec(logs)![1]) : undefined;
  const stopParent = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return {
    port: options.port,
    pid: unreapedPid ?? child.pid!,
    opsPort,
    logs: () => logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (unreapedPid !== undefined) {
        // Its exit code is the parent's to collect, and the parent does not.
        process.kill(unreapedPid, signal);
        return null;
      }
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      if (ownSpool) rmSync(ownSpool, { recursive: true, force: true });
      return code;
    },
    stopParent,
  };
}

/** A network namespace of its own (root only), its loopback up: not even 127.0.0.1 is shared with the test. */
export const IN_NEW_NETNS = ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh'];

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
