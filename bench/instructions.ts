// Instructions per GetGrant, per token exchange and per capture through Envoy, beside their floors,
// counted by callgrind over a fixed number of operations (bench/instruction-counts.ts): a figure
// that does not move with the machine's load, to judge a change in one run.
//   npm run build && node --enable-source-maps dist/bench/instructions.js [--reads 150] [--captures 150]
//     [--runs 2] [--warmup 1500] [--rate 10] [--warmup-rate 0 (closed loop)] [--grants 200] [--dry-run (print, do not rewrite RESULTS.md)]
// Needs valgrind (/usr/bin/valgrind, or BENCH_VALGRIND). Writes the "Instructions per operation"
// section of bench/RESULTS.md (other sections are kept); the dumps and figures.json go to
// bench/results/<time>-callgrind/.
import { parseArgs } from 'node:util';
import { log } from './common.js';
import { DEFAULT_INSTRUCTION_OPTIONS, instructionsTable, measureInstructions, saveFigures, writeInstructionsSection } from './instruction-counts.js';

const { values: flags } = parseArgs({
  options: {
    reads: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.reads) },
    captures: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.captures) },
    runs: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.runs) },
    warmup: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.warmup) },
    rate: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.rate) },
    'warmup-rate': { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.warmupRate) },
    grants: { type: 'string', default: String(DEFAULT_INSTRUCTION_OPTIONS.grants) },
    'dry-run': { type: 'boolean', default: false },
  },
});

const figures = await measureInstructions({
  reads: Number(flags.reads),
  captures: Number(flags.captures),
  runs: Number(flags.runs),
  warmup: Number(flags.warmup),
  rate: Number(flags.rate),
  warmupRate: Number(flags['warmup-rate']),
  grants: Number(flags.grants),
});
const command = `node --enable-source-maps dist/bench/instructions.js ${process.argv.slice(2).join(' ')}`.trim();
process.stdout.write(`${instructionsTable(figures)}\n`);
log(`figures: ${saveFigures(figures)}; took ${figures.meta.seconds} s`);
if (!flags['dry-run']) {
  writeInstructionsSection(figures, command);
  log('wrote the "Instructions per operation" section of bench/RESULTS.md');
}
