import { expect } from 'chai';
import { instructionsOf, sumInstructions, v8Bursts } from '../../bench/callgrind.js';
import { spreadPercent } from '../../bench/instruction-counts.js';

// The head and tail of a real dump (valgrind 3.19, `callgrind_control --dump`), cost lines cut.
const DUMP = `# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 7476
cmd:  node srv.mjs
part: 1

desc: I1 cache: 
desc: D1 cache: 
desc: LL cache: 

desc: Timerange: Basic block 28352573 - 40100211
desc: Trigger: dump window2

positions: line
events: Ir
summary: 153530757

fn=(1) 0x0000000000108090
0 3
totals: 153530757
`;

describe('bench/callgrind', () => {
  it("reads a dump's instructions from its totals: line", () => {
    expect(instructionsOf(DUMP)).to.equal(153_530_757);
  });

  it('prefers totals: to summary:, which reads 0 in a dump taken after instrumentation was turned off', () => {
    expect(instructionsOf(DUMP.replace('summary: 153530757', 'summary: 0'))).to.equal(153_530_757);
  });

  it('falls back on summary: while totals: is not written yet, and says undefined without either', () => {
    const head = DUMP.slice(0, DUMP.indexOf('fn='));
    expect(instructionsOf(head)).to.equal(153_530_757);
    expect(instructionsOf(head.replace(/^summary:.*$/m, ''))).to.equal(undefined);
  });

  it('takes the Ir column when more events are collected', () => {
    const withCache = DUMP.replace('events: Ir', 'events: Dr Ir Dw').replace('totals: 153530757', 'totals: 7 153530757 9');
    expect(instructionsOf(withCache)).to.equal(153_530_757);
  });

  it('sums the dumps of one window (one per thread with --separate-threads=yes), and refuses an incomplete one', () => {
    const thread2 = DUMP.replace('totals: 153530757', 'totals: 1000').replace('summary: 153530757', 'summary: 1000');
    expect(sumInstructions([DUMP, thread2])).to.equal(153_531_757);
    expect(() => sumInstructions([DUMP, 'events: Ir\n'])).to.throw(/totals/);
  });

  it('states the spread between runs as half their range over their mean', () => {
    expect(spreadPercent([98, 102])).to.equal(2);
    expect(spreadPercent([100])).to.equal(0);
  });
});

describe("bench/callgrind: V8's bursts in a callgrind_annotate --inclusive=yes listing", () => {
  // Lines of a real listing (exchange window, valgrind 3.19, Node 20), parameters shortened.
  const listing = [
    '863,966,282 (100.0%)  PROGRAM TOTALS',
    '259,462,111 (30.03%)  ???:v8::internal::OptimizingCompileDispatcher::CompileTask::RunInternal() [/usr/bin/node]',
    '259,439,915 (30.03%)  ???:v8::internal::OptimizedCompilationJob::ExecuteJob(v8::internal::RuntimeCallStats*) [/usr/bin/node]',
    '111,470,032 (12.90%)  ???:v8::internal::ConcurrentMarking::JobTaskMajor::Run(v8::JobDelegate*) [/usr/bin/node]',
    '111,469,648 (12.90%)  ???:v8::internal::ConcurrentMarking::RunMajor(v8::JobDelegate*, unsigned int, bool) [/usr/bin/node]',
    ' 51,269,320 ( 5.93%)  ???:v8::internal::Heap::Scavenge() [/usr/bin/node]',
    ' 44,952,756 ( 5.20%)  ???:v8::internal::Sweeper::SweeperJob::Run(v8::JobDelegate*) [/usr/bin/node]',
    ' 15,233,773 ( 1.76%)  ???:v8::internal::IncrementalMarkingJob::Task::RunInternal() [/usr/bin/node]',
    ' 14,825,782 ( 1.72%)  ???:v8::internal::MarkCompactCollector::CollectGarbage() [/usr/bin/node]',
    " 10,000,000 ( 1.00%)  ???:v8::internal::Sweeper::SweeperJob::Run(v8::JobDelegate*)'2 [/usr/bin/node]",
  ];

  it("takes TurboFan's compile task, and the major GC's marking, sweeping and the larger of its two ways in (one holds the other)", () => {
    expect(v8Bursts(listing.join('\n'))).to.deep.equal({ compiler: 259_462_111, majorGc: 111_470_032 + 44_952_756 + 15_233_773 });
  });

  it('leaves scavenges in, and says 0 for a window with no burst', () => {
    expect(v8Bursts([listing[0], listing[5]].join('\n'))).to.deep.equal({ compiler: 0, majorGc: 0 });
  });
});
