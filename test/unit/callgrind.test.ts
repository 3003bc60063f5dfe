import { expect } from 'chai';
import { compilerInstructions, instructionsOf, sumInstructions } from '../../bench/callgrind.js';
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

describe("bench/callgrind: V8's compiler in a callgrind_annotate --inclusive=yes listing", () => {
  it("takes the inclusive cost of TurboFan's compile task, and nothing else", () => {
    const listing = [
      '643,997,020 (100.0%)  PROGRAM TOTALS',
      '242,538,725 (37.66%)  ???:v8::internal::OptimizingCompileDispatcher::CompileTask::RunInternal() [/usr/bin/node]',
      '242,495,157 (37.65%)  ???:v8::internal::OptimizingCompileDispatcher::CompileNext(v8::internal::TurbofanCompilationJob*, v8::internal::LocalIsolate*) [/usr/bin/node]',
      " 59,491,309 ( 9.24%)  ???:Builtins_CompileLazy'2 [/usr/bin/node]",
      ' 27,596,954 ( 3.45%)  ???:v8::internal::compiler::GraphReducer::ReduceTop() [/usr/bin/node]',
    ].join('\n');
    expect(compilerInstructions(listing)).to.equal(242_538_725);
    expect(compilerInstructions(listing.split('\n').slice(2).join('\n'))).to.equal(0);
  });
});
