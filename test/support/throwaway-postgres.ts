// A Postgres cluster of the test's own (initdb in a temp folder, its own port, run as the postgres
// user when we are root), so a test can stop and start it, and the test runner can start one where
// the machine has none running. The machine's shared cluster on 5432 is never touched.
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';

export interface ThrowawayPostgres {
  port: number;
  /** A database URL on this cluster (the `postgres` database unless named). */
  url(database?: string): string;
  createDatabase(name: string): void;
  stop(mode?: 'fast' | 'immediate'): void;
  start(): void;
  /** pg_dump of a database, as plain SQL text. */
  dump(database: string): string;
  /**
   * SIGKILL of the postmaster and of every process of the cluster at once, as when its host's
   * processes or its container die: what Postgres had written to the OS (WAL write()n) survives,
   * what it held in its own memory (WAL buffers of asynchronous commits) does not. start() recovers.
   */
  crash(): void;
  /** SIGSTOP of the WAL writer (SIGCONT on the returned function): WAL of asynchronous commits then stays in Postgres' memory. */
  freezeWalWriter(): () => void;
  destroy(): void;
}

export interface ThrowawayPostgresOptions {
  /** Server settings (`-c name=value`), e.g. { synchronous_commit: 'off' }. */
  settings?: Record<string, string>;
}

/** The processes whose parent is `pid`, with their titles (Postgres names each, e.g. "postgres: walwriter"). */
function childrenOf(pid: number): Array<{ pid: number; title: string }> {
  const children: Array<{ pid: number; title: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === pid) children.push({ pid: Number(entry), title: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() });
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

function binDir(): string {
  const candidates: string[] = [];
  const configured = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (configured.status === 0) candidates.push(configured.stdout.trim());
  candidates.push('/usr/lib/postgresql/15/bin');
  const found = candidates.find((dir) => existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl')));
  if (!found) throw new Error(`no initdb/pg_ctl${candidates.length ? ` in ${candidates.join(' or ')}` : ''}: install the Postgres server package`);
  return found;
}

function ids(user: string): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim()),
  };
}

const running = new Set<ThrowawayPostgres>();
process.once('exit', () => {
  for (const cluster of running) cluster.destroy();
});

export async function startThrowawayPostgres(startOptions: ThrowawayPostgresOptions = {}): Promise<ThrowawayPostgres> {
  const bin = binDir();
  const root = mkdtempSync(path.join(os.tmpdir(), 'token-tap-pg-'));
  const dataDir = path.join(root, 'data');
  // Postgres refuses to run as root: as root, run it as the `postgres` user; otherwise as ourselves.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { uid, gid } = ids('postgres');
    chownSync(root, uid, gid);
  }
  const run = (command: string, args: string[]) =>
    asRoot
      ? spawnSync('runuser', ['-u', 'postgres', '--', path.join(bin, command), ...args], { encoding: 'utf8', cwd: root })
      : spawnSync(path.join(bin, command), args, { encoding: 'utf8', cwd: root });
  const asPostgres = (command: string, args: string[]) => {
    const result = run(command, args);
    if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
    return result.stdout;
  };
  asPostgres('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const port = await freePort();
  const settings = Object.entries(startOptions.settings ?? {})
    .map(([name, value]) => ` -c ${name}=${value}`)
    .join('');
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off${settings}`;
  const postmasterPid = () => Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  let up = false;
  const cluster: ThrowawayPostgres = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    createDatabase(name) {
      const psql = spawnSync(
        'psql',
        ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${name}`],
        { encoding: 'utf8' },
      );
      if (psql.status !== 0) throw new Error(`CREATE DATABASE ${name} failed: ${psql.stderr}`);
    },
    start() {
      asPostgres('pg_ctl', ['-D', dataDir, '-o', options, '-l', path.join(root, 'postgres.log'), '-w', '-t', '30', 'start']);
      up = true;
    },
    stop(mode = 'fast') {
      asPostgres('pg_ctl', ['-D', dataDir, '-m', mode, '-w', '-t', '30', 'stop']);
      up = false;
    },
    dump(database) {
      const result = spawnSync('pg_dump', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '--no-owner', database], {
        encoding: 'utf8',
        maxBuffer: 256 * 1024 * 1024,
      });
      if (result.status !== 0) throw new Error(`pg_dump ${database} failed: ${result.stderr}`);
      return result.stdout;
    },
    crash() {
      const postmaster = postmasterPid();
      const processes = [postmaster, ...childrenOf(postmaster).map((child) => child.pid)];
      for (const pid of processes) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      // Dead (or a zombie nobody reaps, which still "exists" to the next postmaster's lock checks):
      // the lock files are then stale, as after a reboot.
      const dead = (pid: number) => {
        try {
          return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        } catch {
          return true;
        }
      };
      const until = Date.now() + 10_000;
      while (!processes.every(dead)) {
        if (Date.now() > until) throw new Error('Postgres processes still alive 10 s after SIGKILL');
        spawnSync('sleep', ['0.02']);
      }
      for (const file of [path.join(dataDir, 'postmaster.pid'), path.join(root, `.s.PGSQL.${port}.lock`), path.join(root, `.s.PGSQL.${port}`)])
        rmSync(file, { force: true });
      up = false;
    },
    freezeWalWriter() {
      const walWriter = childrenOf(postmasterPid()).find((child) => child.title.includes('walwriter'));
      if (!walWriter) throw new Error('no walwriter process found under the postmaster');
      process.kill(walWriter.pid, 'SIGSTOP');
      return () => {
        try {
          process.kill(walWriter.pid, 'SIGCONT');
        } catch {
          // killed meanwhile
        }
      };
    },
    destroy() {
      if (up) {
        run('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
        up = false;
      }
      rmSync(root, { recursive: true, force: true });
      running.delete(cluster);
    },
  };
  running.add(cluster);
  try {
    cluster.start();
  } catch (error) {
    cluster.destroy();
    throw error;
  }
  return cluster;
}
