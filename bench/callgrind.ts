// A process under `valgrind --tool=callgrind`, counting instructions only in the windows we open:
// it starts with instrumentation off (--instr-atstart=no, so start-up and warm-up run at valgrind's
// uninstrumented speed), and each window zeroes the counters, turns instrumentation on, runs the
// operations, dumps and turns it off again, through callgrind_control (which talks to the process
// over vgdb). A dump holds every thread of the process summed (callgrind's default,
// --separate-threads=no): the main thread, libuv's pool, V8's GC helper.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '../src/lib/wait-for.js';

const run = promisify(execFile);

export const VALGRIND = process.env.BENCH_VALGRIND ?? '/usr/bin/valgrind';

/**
 * valgrind's arguments to run a program under callgrind with instrumentation off until a window
 * opens. --smc-check=all-non-file: V8 writes and rewrites machine code in anonymous memory, which
 * valgrind must notice (the amd64 default already, named so that it stays so).
 */
export function callgrindArgs(outDir: string, name: string): string[] {
  return [
    '--tool=callgrind',
    '--instr-atstart=no',
    '--smc-check=all-non-file',
    '--dump-instr=no',
    '--collect-jumps=no',
    `--callgrind-out-file=${path.join(outDir, `callgrind.out.${name}.%p`)}`,
  ];
}

/**
 * The instruction count (Ir) of one callgrind output file: its `totals:` line (the sum of every cost
 * line written), else its `summary:` line, at the position `events:` gives Ir. undefined when the
 * file has neither (still being written).
 */
export function instructionsOf(text: string): number | undefined {
  const events = /^events:\s*(.+)$/m.exec(text)?.[1]?.trim().split(/\s+/) ?? ['Ir'];
  const column = Math.max(0, events.indexOf('Ir'));
  for (const key of ['totals', 'summary']) {
    const line = new RegExp(`^${key}:\\s*(.+)$`, 'm').exec(text)?.[1];
    if (line === undefined) continue;
    const value = Number(line.trim().split(/\s+/)[column]);
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/** The instructions of one window: the sum over its dump files (one per thread with --separate-threads=yes). */
export function sumInstructions(texts: readonly string[]): number {
  return texts.reduce((total, text) => {
    const count = instructionsOf(text);
    if (count === undefined) throw new Error('a callgrind dump without a totals: or summary: line');
    return total + count;
  }, 0);
}

/** Inclusive cost of each function of a `callgrind_annotate --inclusive=yes` listing, by name (parameters and object file dropped). */
function inclusiveCosts(annotated: string): Map<string, number> {
  const costs = new Map<string, number>();
  for (const line of annotated.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(.*?)\(/.exec(line);
    // A recursive entry ('2) is inside its first one: the first line of a name is the one.
    if (match && !costs.has(match[2]!)) costs.set(match[2]!, Number(match[1]!.replaceAll(',', '')));
  }
  return costs;
}

/**
 * What of a window (a `callgrind_annotate --inclusive=yes` listing) is not the operations' own work
 * but V8's, in bursts that do not follow them and make most of the difference between two windows:
 * `compiler`, TurboFan's concurrent compile task (tiering); `majorGc`, a full mark-compact
 * (concurrent marking, sweeping, and the atomic pause, reached through the incremental marking job
 * or directly: the larger of the two, as one holds the other). Scavenges (minor GC) stay in the
 * figures: they follow the operations' allocation.
 */
export function v8Bursts(annotated: string): { compiler: number; majorGc: number } {
  const costs = inclusiveCosts(annotated);
  const cost = (name: string) => costs.get(name) ?? 0;
  return {
    compiler: cost('v8::internal::OptimizingCompileDispatcher::CompileTask::RunInternal'),
    majorGc:
      cost('v8::internal::ConcurrentMarking::JobTaskMajor::Run') +
      cost('v8::internal::Sweeper::SweeperJob::Run') +
      Math.max(cost('v8::internal::IncrementalMarkingJob::Task::RunInternal'), cost('v8::internal::MarkCompactCollector::CollectGarbage')),
  };
}

async function annotate(file: string): Promise<string> {
  const { stdout } = await run('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { maxBuffer: 256 * 1024 * 1024, timeout: 120_000 });
  return stdout;
}

async function control(pid: number, ...args: string[]): Promise<void> {
  const { stdout } = await run('callgrind_control', [...args, String(pid)], { timeout: 60_000 });
  if (!/OK/.test(stdout)) throw new Error(`callgrind_control ${args.join(' ')} ${pid}: ${stdout.trim()}`);
}

/** The process `pid`, started with callgrindArgs(outDir, name). */
export class CallgrindProcess {
  private windows = 0;

  constructor(
    readonly pid: number,
    private readonly outDir: string,
    private readonly name: string,
  ) {}

  private dumps(): string[] {
    const prefix = `callgrind.out.${this.name}.${this.pid}.`;
    return readdirSync(this.outDir).filter((file) => file.startsWith(prefix));
  }

  /**
   * Instructions the process executes (all threads) while `work` runs, and `work`'s result.
   * `settle` runs first, instrumented but not counted: turning instrumentation on makes valgrind
   * translate all code again, and the first operations after it are slow enough to hit timeouts.
   */
  async window<T>(
    work: () => Promise<T>,
    settle?: () => Promise<unknown>,
  ): Promise<{ instructions: number; compiler: number; majorGc: number; result: T; files: string[] }> {
    this.windows += 1;
    const label = `window-${this.windows}`;
    const before = new Set(this.dumps());
    await control(this.pid, '--instr=on');
    await settle?.();
    await control(this.pid, '--zero');
    const result = await work();
    // Dump while instrumentation is still on (a dump after it is turned off reports summary: 0).
    await control(this.pid, `--dump=${label}`);
    await control(this.pid, '--instr=off');
    const { files, texts } = await waitFor(
      `callgrind's dump ${label} of ${this.pid}`,
      async () => {
        const fresh = this.dumps().filter((file) => !before.has(file));
        const read = fresh.map((file) => readFileSync(path.join(this.outDir, file), 'utf8'));
        return fresh.length > 0 && read.every((text) => instructionsOf(text) !== undefined) ? { files: fresh, texts: read } : undefined;
      },
      30_000,
      100,
    );
    const instructions = sumInstructions(texts);
    const paths = files.map((file) => path.join(this.outDir, file));
    let compiler = 0;
    let majorGc = 0;
    for (const file of paths) {
      const bursts = v8Bursts(await annotate(file));
      compiler += bursts.compiler;
      majorGc += bursts.majorGc;
    }
    return { instructions, compiler, majorGc, result, files: paths };
  }
}
