// The info line of counts that stands for a line per capture: at once after a quiet spell, then at
// most one per interval, and what is left on close.
import { expect } from 'chai';
import { RecordedSummary } from '../../src/ingest/recorded-summary.js';
import { memoryLogger } from '../support/memory-log.js';

describe('captures recorded summary line', () => {
  it('sums up the first batch at once, holds the next within the interval, and says what is left on close', () => {
    const log = memoryLogger('info');
    const summary = new RecordedSummary(log.logger, 60_000);
    summary.note('acme', 'stored');
    summary.note('acme', 'idp_error');
    summary.settle();
    summary.note('entra', 'stored');
    summary.settle();
    const lines = () => log.lines().filter((line) => line.msg === 'captures recorded');
    expect(lines()).to.have.length(1);
    expect(lines()[0]).to.deep.include({ captures: 2, outcomes: { stored: 1, idp_error: 1 }, idps: { acme: 2 } });
    summary.close();
    expect(lines()).to.have.length(2);
    expect(lines()[1]).to.deep.include({ captures: 1, outcomes: { stored: 1 }, idps: { entra: 1 } });
    summary.close();
    expect(lines(), 'nothing new, no line').to.have.length(2);
  });

  it('writes the held counts once the interval is over, without another capture', async () => {
    const log = memoryLogger('info');
    const summary = new RecordedSummary(log.logger, 20);
    summary.note('acme', 'stored');
    summary.settle();
    summary.note('acme', 'stored');
    summary.settle();
    await new Promise((resolve) => setTimeout(resolve, 60));
    const counts = log
      .lines()
      .filter((line) => line.msg === 'captures recorded')
      .map((line) => line.captures);
    expect(counts).to.deep.equal([1, 1]);
  });
});
