import FakeTimers from '@sinonjs/fake-timers';
import { expect } from 'chai';
import type { ObservedResponse } from '../../src/capture/types.js';
import { CaptureIntake } from '../../src/ingest/intake.js';

function observed(index: number): ObservedResponse {
  return {
    idp: `idp${index}`,
    routeKind: 'token',
    subjectField: undefined,
    bearerToken: undefined,
    status: 200,
    headers: new Map(),
    body: Buffer.from('{}'),
    bodyTruncated: false,
    complete: true,
    startedAt: 0,
  };
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

describe('ingest/intake', () => {
  // The intake's two schedulers (the gather window's setTimeout, the slices' setImmediate) run on a
  // fake clock: each test moves time itself instead of sleeping, so none waits or races real time.
  let clock: ReturnType<typeof FakeTimers.install>;
  beforeEach(() => {
    clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
  });
  afterEach(() => clock.uninstall());

  it('handles nothing while responses gather, then all of them in arrival order', async () => {
    const handled: string[] = [];
    const { logger, metrics } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 30, maxBacklog: 100, logger, metrics });
    for (let index = 0; index < 5; index += 1) intake.take(observed(index));
    await clock.tickAsync(10);
    expect(handled).to.deep.equal([]);
    expect(intake.depth).to.equal(5);
    await clock.tickAsync(40);
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
    // The ticker never stops by itself: step the clock one timer (one turn) at a time until the
    // intake is done, at most 1000 turns.
    for (let turn = 0; turn < 1_000 && handled.length < 35; turn += 1) clock.next();
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
    await clock.tickAsync(40);
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
    await clock.tickAsync(10);
    expect(handled).to.deep.equal(['idp0', 'idp2']);
    expect(dropped.get('capture_failed')).to.equal(1);
  });

  it('flush() handles everything waiting at once (shutdown)', () => {
    const handled: string[] = [];
    const { logger, metrics } = counters();
    const intake = new CaptureIntake({
      handle: (response) => void handled.push(response.idp!),
      gatherMs: 10_000,
      maxBacklog: 100,
      logger,
      metrics,
      sliceSize: 2,
    });
    for (let index = 0; index < 5; index += 1) intake.take(observed(index));
    intake.flush();
    expect(handled).to.have.length(5);
    expect(intake.depth).to.equal(0);
  });

  it('keeps working after a handler throws something that is not an Error', async () => {
    const handled: string[] = [];
    const { logger, metrics, dropped } = counters();
    const intake = new CaptureIntake({
      handle: (response) => {
        if (response.idp === 'idp0') throw null; // eslint-disable-line no-throw-literal
        handled.push(response.idp!);
      },
      gatherMs: 0,
      maxBacklog: 10,
      logger,
      metrics,
    });
    intake.take(observed(0));
    await clock.tickAsync(10);
    intake.take(observed(1));
    await clock.tickAsync(10);
    expect(handled).to.deep.equal(['idp1']);
    expect(dropped.get('capture_failed')).to.equal(1);
  });

  it('bounds the body bytes waiting, not only their count', async () => {
    const { logger, metrics, dropped } = counters();
    const handled: number[] = [];
    const intake = new CaptureIntake({
      handle: (response) => void handled.push(response.body.length),
      gatherMs: 20,
      maxBacklog: 1000,
      maxBytes: 10 * 1024 * 1024,
      logger,
      metrics,
    });
    for (let index = 0; index < 100; index += 1) intake.take({ ...observed(index), body: Buffer.alloc(1024 * 1024) });
    expect(intake.depth).to.equal(10);
    expect(dropped.get('capture_backlog_full')).to.equal(90);
    await clock.tickAsync(40);
    expect(handled).to.have.length(10);
  });

  it('shows its depth in a gauge, and whenHandled() resolves once what was taken before is handled', async () => {
    const { logger, metrics } = counters();
    const depths: number[] = [];
    const intake = new CaptureIntake({
      handle: () => undefined,
      gatherMs: 30,
      maxBacklog: 100,
      logger,
      metrics: { ...metrics, intakeDepth: { set: (value: number) => void depths.push(value) } },
    });
    for (let index = 0; index < 3; index += 1) intake.take(observed(index));
    expect(depths.at(-1)).to.equal(3);
    let resolved = false;
    const handled = intake.whenHandled(1_000).then(() => (resolved = true));
    await clock.tickAsync(10);
    expect(resolved, 'not before the gather window ends').to.equal(false);
    await clock.tickAsync(20);
    await handled;
    expect(depths.at(-1)).to.equal(0);
    // Nothing waiting: at once.
    await intake.whenHandled(1);
  });

  it('after close(), a late hand-off is handled at once (the spool is still open then)', () => {
    const handled: string[] = [];
    const { logger, metrics } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 10_000, maxBacklog: 100, logger, metrics });
    intake.take(observed(0));
    intake.close();
    intake.take(observed(1));
    expect(handled).to.deep.equal(['idp0', 'idp1']);
  });

  it('whenHandled() is not fooled by a drop: it waits for the responses kept', async () => {
    const handled: string[] = [];
    const { logger, metrics, dropped } = counters();
    const intake = new CaptureIntake({ handle: (response) => void handled.push(response.idp!), gatherMs: 50, maxBacklog: 1, logger, metrics });
    intake.take(observed(0));
    let resolved = false;
    const waited = intake.whenHandled(1_000).then(() => (resolved = true));
    intake.take(observed(1));
    expect(dropped.get('capture_backlog_full')).to.equal(1);
    await clock.tickAsync(5);
    expect(resolved).to.equal(false);
    await clock.tickAsync(45);
    await waited;
    expect(handled).to.deep.equal(['idp0']);
  });

  it('takes one body larger than the byte bound when nothing else waits (capture judges its size)', async () => {
    const handled: number[] = [];
    const { logger, metrics, dropped } = counters();
    const intake = new CaptureIntake({
      handle: (response) => void handled.push(response.body.length),
      gatherMs: 0,
      maxBacklog: 10,
      maxBytes: 10,
      logger,
      metrics,
    });
    intake.take({ ...observed(0), body: Buffer.alloc(11) });
    await clock.tickAsync(10);
    expect(handled).to.deep.equal([11]);
    expect(dropped.size).to.equal(0);
  });
});
