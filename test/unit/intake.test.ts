import { expect } from 'chai';
import type { ObservedResponse } from '../../src/capture/types.js';
import { CaptureIntake } from '../../src/ingest/intake.js';

function observed(index: number): ObservedResponse {
  return { idp: `idp${index}`, routeKind: 'token', subjectField: undefined, bearerToken: undefined, status: 200, headers: new Map(), body: Buffer.from('{}'), bodyTruncated: false, complete: true, startedAt: 0 };
}

function counters() {
  const dropped = new Map<string, number>();
  const errors: object[] = [];
  return {
    dropped,
    errors,
    logger: { error: (fields: object) => void errors.push(fields) },
    metrics: { capturesDropped: { inc: ({ reason }: { reason: string }, value = 1) => void dropped.set(reason, (dropped.get(reason) ?? 0) + value) } },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('ingest/intake', () => {
  it('handles nothing while responses gather, then all of them in arrival order', async () => {
    const handled: string[] = [];
    const { logger, metrics } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 30, maxBacklog: 100, logger, metrics });
    for (let index = 0; index < 5; index += 1) intake.take(observed(index));
    await sleep(10);
    expect(handled).to.deep.equal([]);
    expect(intake.depth).to.equal(5);
    await sleep(40);
    expect(handled).to.deep.equal(['idp0', 'idp1', 'idp2', 'idp3', 'idp4']);
    expect(intake.depth).to.equal(0);
  });

  it('works in slices, giving the event loop a turn between them', async () => {
    const handled: number[] = [];
    const { logger, metrics } = counters();
    let turns = 0;
    const intake = new CaptureIntake({ handle: () => void handled.push(turns), gatherMs: 0, maxBacklog: 1000, logger, metrics, sliceSize: 10 });
    for (let index = 0; index < 35; index += 1) intake.take(observed(index));
    // A ticker on the same queue the slices use: it runs between any two slices.
    let ticking = true;
    const tick = () => {
      turns += 1;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    await sleep(20);
    ticking = false;
    expect(handled).to.have.length(35);
    // 4 slices (10, 10, 10, 5), each on a later turn than the one before.
    const slices = new Set(handled);
    expect(slices.size).to.equal(4);
  });

  it('drops past the bound, counts and logs the drops once per slice, and keeps what it took', async () => {
    const handled: string[] = [];
    const { logger, metrics, dropped, errors } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 20, maxBacklog: 3, logger, metrics });
    for (let index = 0; index < 10; index += 1) intake.take(observed(index));
    await sleep(40);
    expect(handled).to.deep.equal(['idp0', 'idp1', 'idp2']);
    expect(dropped.get('capture_backlog_full')).to.equal(7);
    expect(errors).to.have.length(1);
    expect(errors[0]).to.include({ dropped: 7, reason: 'capture_backlog_full' });
  });

  it('a response whose handling throws is dropped alone, counted as capture_failed', async () => {
    const handled: string[] = [];
    const { logger, metrics, dropped } = counters();
    const intake = new CaptureIntake({
      handle: (response) => {
        if (response.idp === 'idp1') throw new Error('cannot');
        handled.push(response.idp!);
      },
      gatherMs: 0,
      maxBacklog: 10,
      logger,
      metrics,
    });
    for (let index = 0; index < 3; index += 1) intake.take(observed(index));
    await sleep(10);
    expect(handled).to.deep.equal(['idp0', 'idp2']);
    expect(dropped.get('capture_failed')).to.equal(1);
  });

  it('flush() handles everything waiting at once (shutdown)', () => {
    const handled: string[] = [];
    const { logger, metrics } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 10_000, maxBacklog: 100, logger, metrics, sliceSize: 2 });
    for (let index = 0; index < 5; index += 1) intake.take(observed(index));
    intake.flush();
    expect(handled).to.have.length(5);
    expect(intake.depth).to.equal(0);
  });
});
