// The refusal summariser's counting core (lib/refusal-summary.ts) and its edges: the Okta hook's
// (hook/refusals.ts) and the token exchange's, both on the shared writer (lib/refusal-writer.ts),
// and the capture path's (ingest/capture-refusals.ts), on a clock the test moves, writers faked.
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { ExchangeRefusals } from '../../src/exchange/refusals.js';
import { HookRefusals, OTHER_PEERS } from '../../src/hook/refusals.js';
import { captureFrom } from '../../src/capture/capture.js';
import { CaptureRefusals, DEFAULT_MAX_KEYS_PER_IDP, OTHER_ERROR_CODES } from '../../src/ingest/capture-refusals.js';
import { DEFAULT_MAX_SUMMARY_KEYS, RefusalSummary } from '../../src/lib/refusal-summary.js';
import type { AccessEvent } from '../../src/store/access-events.js';
import type { CaptureSummary } from '../../src/store/grants.js';
import { syntheticCapture } from '../support/captures.js';

type Key = { peer: string; outcome: string };

function clock(start = 1_000_000) {
  const state = { now: start };
  return { now: () => state.now, advance: (ms: number) => void (state.now += ms) };
}

function summary(maxKeys = 10, intervalMs = 60_000) {
  const time = clock();
  const core = new RefusalSummary<Key>({ intervalMs, maxKeys, overflow: (key) => ({ ...key, peer: 'other' }), now: time.now });
  return { core, time };
}

describe('refusal summary (pure core)', () => {
  it('reports the first refusal of a key at once and counts the rest until its interval ends', () => {
    const { core, time } = summary();
    const key = { peer: '127.0.0.1', outcome: 'unauthenticated' };
    expect(core.note(key).first).to.equal(true);
    for (let call = 0; call < 999; call += 1) expect(core.note(key).first).to.equal(false);
    time.advance(59_999);
    expect(core.due()).to.deep.equal([]);
    time.advance(1);
    expect(core.due()).to.deep.equal([{ key, count: 999, since: 1_000_000, until: 1_060_000 }]);
  });

  it('keeps a flooding key in summaries (no new first), and forgets it after a quiet interval', () => {
    const { core, time } = summary();
    const key = { peer: '10.0.0.1', outcome: 'bad_request' };
    core.note(key);
    core.note(key);
    time.advance(60_000);
    expect(core.due().map((ended) => ended.count)).to.deep.equal([1]);
    // Still flooding: counted, not a first.
    expect(core.note(key).first).to.equal(false);
    time.advance(60_000);
    expect(core.due().map((ended) => ended.count)).to.deep.equal([1]);
    // A quiet interval: nothing to write, and the key is forgotten.
    time.advance(60_000);
    expect(core.due()).to.deep.equal([]);
    expect(core.size).to.equal(0);
    expect(core.note(key).first).to.equal(true);
  });

  it('a key whose interval passed with nothing counted starts a new interval with a first, even before due() runs', () => {
    const { core, time } = summary();
    const key = { peer: '10.0.0.2', outcome: 'unauthenticated' };
    core.note(key);
    time.advance(61_000);
    expect(core.note(key).first).to.equal(true);
    expect(core.note(key).first).to.equal(false);
  });

  it('keys are told apart by every label, whatever their order', () => {
    const { core } = summary();
    expect(core.note({ peer: 'a', outcome: 'x' }).first).to.equal(true);
    expect(core.note({ outcome: 'x', peer: 'a' } as Key).first).to.equal(false);
    expect(core.note({ peer: 'a', outcome: 'y' }).first).to.equal(true);
    expect(core.note({ peer: 'b', outcome: 'x' }).first).to.equal(true);
  });

  it('tracks at most maxKeys keys; past them refusals count under the overflow bucket', () => {
    const { core, time } = summary(3);
    for (let peer = 0; peer < 3; peer += 1) expect(core.note({ peer: `p${peer}`, outcome: 'u' }).overflowed).to.equal(false);
    const first = core.note({ peer: 'p3', outcome: 'u' });
    expect(first).to.deep.equal({ first: true, key: { peer: 'other', outcome: 'u' }, overflowed: true });
    for (let peer = 4; peer < 10_000; peer += 1) core.note({ peer: `p${peer}`, outcome: 'u' });
    expect(core.size).to.equal(4);
    // A tracked key is still its own.
    expect(core.note({ peer: 'p1', outcome: 'u' }).key.peer).to.equal('p1');
    time.advance(60_000);
    const ended = core.due();
    expect(ended.find((entry) => entry.key.peer === 'other')?.count).to.equal(10_000 - 4);
  });

  it('with groupOf, a group tracks at most maxKeysPerGroup keys; past them its own refusals overflow, and its keys come free as they are forgotten', () => {
    const time = clock();
    const core = new RefusalSummary<Key>({
      intervalMs: 60_000,
      maxKeys: 100,
      maxKeysPerGroup: 2,
      groupOf: (key) => key.outcome,
      overflow: (key) => ({ ...key, peer: 'other' }),
      now: time.now,
    });
    expect(core.note({ peer: 'a', outcome: 'x' }).overflowed).to.equal(false);
    expect(core.note({ peer: 'b', outcome: 'x' }).overflowed).to.equal(false);
    expect(core.note({ peer: 'c', outcome: 'x' })).to.deep.equal({ first: true, key: { peer: 'other', outcome: 'x' }, overflowed: true });
    expect(core.note({ peer: 'd', outcome: 'x' })).to.deep.equal({ first: false, key: { peer: 'other', outcome: 'x' }, overflowed: true });
    // Another group has its keys still.
    expect(core.note({ peer: 'c', outcome: 'y' })).to.deep.equal({ first: true, key: { peer: 'c', outcome: 'y' }, overflowed: false });
    expect(core.note({ peer: 'd', outcome: 'y' }).overflowed).to.equal(false);
    // A quiet interval forgets a, b and c (nothing counted): group x has room again.
    time.advance(60_000);
    core.due();
    time.advance(60_000);
    core.due();
    expect(core.size).to.equal(0);
    expect(core.note({ peer: 'e', outcome: 'x' })).to.deep.include({ first: true, overflowed: false });
  });

  it('drain() hands back everything counted, interval ended or not, and forgets every key', () => {
    const { core, time } = summary();
    core.note({ peer: 'a', outcome: 'u' });
    core.note({ peer: 'a', outcome: 'u' });
    core.note({ peer: 'b', outcome: 'u' });
    time.advance(5);
    expect(core.drain()).to.deep.equal([{ key: { peer: 'a', outcome: 'u' }, count: 1, since: 1_000_000, until: 1_000_005 }]);
    expect(core.size).to.equal(0);
  });
});

describe('Okta hook refusals (hook/refusals.ts)', () => {
  function hookRefusals(options: { maxPeers?: number; failWrites?: boolean } = {}) {
    const time = clock();
    const rows: AccessEvent[] = [];
    const lines: Array<{ level: string; fields: Record<string, unknown>; message: string }> = [];
    const summarised: Array<{ outcome: string; value: number }> = [];
    const refusals = new HookRefusals({
      audit: { record: async (event) => (options.failWrites ? Promise.reject(new Error('Postgres is away')) : void rows.push(event)) },
      logger: {
        warn: ((fields: Record<string, unknown>, message: string) => void lines.push({ level: 'warn', fields, message })) as never,
        error: ((fields: Record<string, unknown>, message: string) => void lines.push({ level: 'error', fields, message })) as never,
      },
      intervalMs: 60_000,
      ...(options.maxPeers ? { maxPeers: options.maxPeers } : {}),
      summarised: { inc: ({ outcome }, value = 1) => void summarised.push({ outcome, value }) },
      now: time.now,
    });
    const refuse = (peer: string, reason = 'wrong authorization value', outcome = 'unauthenticated') =>
      refusals.record({ peer, outcome: outcome as 'unauthenticated', reason, status: 401, durationMs: 0 });
    return { refusals, time, rows, lines, summarised, refuse };
  }

  it('1,000 refusals of one peer: one row and one line at once, one summary row and line with the rest when the interval ends', async () => {
    const { refusals, rows, lines, summarised, refuse } = hookRefusals();
    for (let call = 0; call < 1_000; call += 1) refuse('127.0.0.1');
    await refusals.close();
    expect(rows.map((row) => row.count)).to.deep.equal([1, 999]);
    expect(rows[0]).to.include({ operation: 'okta_hook', outcome: 'unauthenticated', peer: '127.0.0.1' });
    expect(rows[0]!.detail).to.contain('wrong authorization value');
    expect(lines.map((line) => line.message)).to.deep.equal([
      'okta hook call refused',
      'okta hook calls refused (summary: how many more like the line before)',
    ]);
    expect(lines[1]!.fields).to.include({ count: 999, detail: 'wrong authorization value' });
    expect(summarised.reduce((sum, entry) => sum + entry.value, 0)).to.equal(999);
  });

  it('a summary row per interval while the refusals go on (tick), none once they stop', async () => {
    const { refusals, time, rows, refuse } = hookRefusals();
    refuse('127.0.0.1');
    refuse('127.0.0.1');
    time.advance(60_000);
    refusals.tick();
    refuse('127.0.0.1');
    refuse('127.0.0.1');
    refuse('127.0.0.1');
    time.advance(60_000);
    refusals.tick();
    time.advance(60_000);
    refusals.tick();
    await refusals.close();
    expect(rows.map((row) => row.count)).to.deep.equal([1, 1, 3]);
  });

  it('logs a new reason at once (one line per peer, outcome and reason), its row summarised with the others', async () => {
    const { refusals, rows, lines, refuse } = hookRefusals();
    refuse('127.0.0.1', 'ERR_JWT_EXPIRED');
    refuse('127.0.0.1', 'ERR_JWT_EXPIRED');
    refuse('127.0.0.1', 'ERR_JWT_CLAIM_VALIDATION_FAILED');
    await refusals.close();
    expect(lines.filter((line) => line.message === 'okta hook call refused').map((line) => line.fields.detail)).to.deep.equal([
      'ERR_JWT_EXPIRED',
      'ERR_JWT_CLAIM_VALIDATION_FAILED',
    ]);
    expect(rows.map((row) => row.count)).to.deep.equal([1, 2]);
  });

  it('bounds the peers it tracks: past maxPeers, one (other) row', async () => {
    const { refusals, rows, refuse } = hookRefusals({ maxPeers: 5 });
    for (let peer = 0; peer < 1_000; peer += 1) refuse(`10.0.${peer >> 8}.${peer & 255}`);
    await refusals.close();
    expect(rows.filter((row) => row.peer !== OTHER_PEERS)).to.have.length(5);
    expect(rows.filter((row) => row.peer === OTHER_PEERS).map((row) => row.count)).to.deep.equal([1, 994]);
    expect(rows.reduce((sum, row) => sum + (row.count ?? 1), 0)).to.equal(1_000);
  });

  it('a row Postgres refuses is logged with its count, never thrown at the caller', async () => {
    const { refusals, lines, refuse } = hookRefusals({ failWrites: true });
    refuse('127.0.0.1');
    refuse('127.0.0.1');
    await refusals.close();
    const errors = lines.filter((line) => line.level === 'error');
    expect(errors.map((line) => line.fields.count)).to.deep.equal([1, 1]);
  });
});

describe('token exchange refusals (exchange/refusals.ts, on the same writer as the hook)', () => {
  it('one row naming the key id and one line at once, then one summary row (no key id) and line with the rest', async () => {
    const time = clock();
    const rows: AccessEvent[] = [];
    const lines: Array<{ fields: Record<string, unknown>; message: string }> = [];
    const summarised: Array<{ source: string; outcome: string }> = [];
    const refusals = new ExchangeRefusals({
      audit: { record: async (event) => void rows.push(event) },
      logger: {
        warn: ((fields: Record<string, unknown>, message: string) => void lines.push({ fields, message })) as never,
        error: (() => undefined) as never,
      },
      intervalMs: 60_000,
      summarised: { inc: (labels) => void summarised.push(labels) },
      now: time.now,
    });
    for (let call = 0; call < 10; call += 1)
      refusals.record({ peer: '10.0.0.7', outcome: 'unauthenticated', reason: 'the client secret is not the key', apiKeyId: '0123456789abcdef' });
    time.advance(60_000);
    refusals.tick();
    await refusals.close();
    expect(rows.map((row) => [row.operation, row.outcome, row.peer, row.count, row.apiKeyId])).to.deep.equal([
      ['exchange', 'unauthenticated', '10.0.0.7', 1, '0123456789abcdef'],
      ['exchange', 'unauthenticated', '10.0.0.7', 9, undefined],
    ]);
    expect(rows[0]!.detail).to.equal('the client secret is not the key; more unauthenticated requests from 10.0.0.7 are counted into one row per 60 s');
    expect(rows[1]!.detail).to.match(/^9 more unauthenticated requests from 10\.0\.0\.7 between .* \(summary\)$/);
    expect(lines.map((line) => line.message)).to.deep.equal([
      'token exchange request refused',
      'token exchange requests refused (summary: how many more like the line before)',
    ]);
    expect(lines[0]!.fields).to.include({ apiKeyId: '0123456789abcdef', detail: 'the client secret is not the key' });
    expect(summarised).to.have.length(9);
    expect(summarised[0]).to.deep.equal({ source: 'token_exchange', outcome: 'unauthenticated' });
  });
});

describe('capture refusals (ingest/capture-refusals.ts)', () => {
  function captureRefusals(options: { failWrites?: number; maxKeys?: number } = {}) {
    const time = clock();
    const written: CaptureSummary[][] = [];
    const counted: Array<{ idp?: string; outcome?: string; value: number }> = [];
    let failures = options.failWrites ?? 0;
    const refusals = new CaptureRefusals({
      store: {
        recordCaptureSummaries: async (summaries) => {
          if (failures > 0) {
            failures -= 1;
            throw new Error('Postgres is away');
          }
          written.push([...summaries]);
        },
      },
      logger: { info: () => undefined, error: () => undefined } as never,
      metrics: { captures: { inc: (labels, value = 1) => void counted.push({ ...labels, value }) } },
      intervalMs: 60_000,
      maxKeys: options.maxKeys ?? 4,
      now: time.now,
    });
    return { refusals, time, written, counted };
  }
  const idpError = (code: string, idp = 'acme'): Capture =>
    syntheticCapture(idp, undefined, { outcome: 'idp_error', httpStatus: 400, tokens: undefined, errorCode: code });

  it('admits token responses and the first of each (IdP, outcome, error code); counts the rest into one row each', async () => {
    const { refusals, written, counted } = captureRefusals();
    expect(refusals.admit(syntheticCapture('acme', 'alice'))).to.equal(true);
    expect(refusals.admit(syntheticCapture('acme', undefined))).to.equal(true);
    const admitted = Array.from({ length: 500 }, () => refusals.admit(idpError('invalid_grant'))).filter(Boolean).length;
    const otherCode = Array.from({ length: 300 }, () => refusals.admit(idpError('invalid_client'))).filter(Boolean).length;
    const junk = Array.from({ length: 200 }, () => refusals.admit(syntheticCapture('acme', undefined, { outcome: 'unparseable', tokens: undefined }))).filter(
      Boolean,
    ).length;
    expect([admitted, otherCode, junk]).to.deep.equal([1, 1, 1]);
    expect(counted.reduce((sum, entry) => sum + entry.value, 0)).to.equal(499 + 299 + 199);
    await refusals.close();
    const rows = written.flat();
    expect(rows.map((row) => [row.outcome, row.errorCode, row.count])).to.deep.equal([
      ['idp_error', 'invalid_grant', 499],
      ['idp_error', 'invalid_client', 299],
      ['unparseable', undefined, 199],
    ]);
    expect(rows.every((row) => row.tokens === undefined && row.subject === undefined)).to.equal(true);
  });

  it('tells refusals apart by what capture/ says of them: a subject over its bound and an email over its bound each get a row of their own', async () => {
    const { refusals, written } = captureRefusals();
    const tooLarge = (detail: string) => syntheticCapture('acme', undefined, { outcome: 'too_large', tokens: undefined, detail });
    expect(refusals.admit(tooLarge('subject over 1,024 bytes'))).to.equal(true);
    expect(refusals.admit(tooLarge('email over 320 bytes'))).to.equal(true);
    expect(refusals.admit(tooLarge('email over 320 bytes'))).to.equal(false);
    await refusals.close();
    expect(written.flat().map((row) => [row.outcome, row.count, /\(email over 320 bytes\)/.test(row.detail ?? '')])).to.deep.equal([['too_large', 1, true]]);
  });

  it('an IdP inventing error codes fills at most maxKeys kinds, then one (other) bucket', async () => {
    const { refusals, written } = captureRefusals();
    const admitted = Array.from({ length: 1_000 }, (_, index) => refusals.admit(idpError(`code_${index}`))).filter(Boolean).length;
    // Four kinds and the overflow bucket's first.
    expect(admitted).to.equal(5);
    await refusals.close();
    expect(written.flat().map((row) => [row.errorCode, row.count])).to.deep.equal([[OTHER_ERROR_CODES, 995]]);
  });

  it(`one IdP inventing error codes fills at most its own ${DEFAULT_MAX_KEYS_PER_IDP} kinds (then its own (other)), not the keys of the other IdPs`, async () => {
    const { refusals, written } = captureRefusals({ maxKeys: DEFAULT_MAX_SUMMARY_KEYS });
    const admitted = Array.from({ length: 2_000 }, (_, index) => refusals.admit(idpError(`code_${index}`, 'hostile'))).filter(Boolean).length;
    expect(admitted).to.equal(DEFAULT_MAX_KEYS_PER_IDP + 1);
    // Another IdP's refusals are still told apart: each kind its own first, its own row.
    expect(['invalid_grant', 'invalid_client', 'temporarily_unavailable'].map((code) => refusals.admit(idpError(code, 'acme')))).to.deep.equal([
      true,
      true,
      true,
    ]);
    expect(refusals.admit(idpError('invalid_grant', 'acme'))).to.equal(false);
    await refusals.close();
    const rows = written.flat();
    expect(rows.filter((row) => row.idp === 'hostile').map((row) => [row.errorCode, row.count])).to.deep.equal([
      [OTHER_ERROR_CODES, 2_000 - DEFAULT_MAX_KEYS_PER_IDP - 1],
    ]);
    expect(rows.filter((row) => row.idp === 'acme').map((row) => [row.errorCode, row.count])).to.deep.equal([['invalid_grant', 1]]);
  });

  it("2,000 responses from one IdP, each with a content-encoding of its own: at most one kind per IdP budget, and another IdP's first refusal is admitted", async () => {
    const { refusals, written } = captureRefusals({ maxKeys: DEFAULT_MAX_SUMMARY_KEYS });
    const response = (idp: string, coding: string): Capture =>
      captureFrom(
        {
          idp,
          routeKind: 'token',
          subjectField: undefined,
          bearerToken: undefined,
          status: 200,
          headers: new Map([['content-encoding', coding]]),
          body: Buffer.from('{}'),
          bodyTruncated: false,
          complete: true,
          startedAt: 0,
        },
        { maxDecodedBytes: 1024 },
      );
    const admitted = Array.from({ length: 2_000 }, (_, index) => refusals.admit(response('hostile', `x-idp-chosen-${index}-${'z'.repeat(200)}`))).filter(
      Boolean,
    ).length;
    expect(admitted)
      .to.be.at.least(1)
      .and.at.most(DEFAULT_MAX_KEYS_PER_IDP + 1);
    expect(refusals.admit(response('acme', 'zstd'))).to.equal(true);
    expect(refusals.admit(idpError('invalid_grant', 'acme'))).to.equal(true);
    await refusals.close();
    const rows = written.flat();
    expect(rows.reduce((sum, row) => sum + (row.count ?? 0), 0)).to.equal(2_000 - admitted);
    for (const row of rows) {
      expect(row.detail!.length, row.detail).to.be.at.most(200);
      expect(row.detail).to.not.contain('idp-chosen');
    }
  });

  it('a summary row quotes no IdP text: the error code stays in its column, out of the detail', async () => {
    const { refusals, written } = captureRefusals();
    const code = `invented_${'c'.repeat(150)}`;
    refusals.admit(idpError(code));
    refusals.admit(idpError(code));
    refusals.admit(
      syntheticCapture('acme', undefined, {
        outcome: 'unparseable',
        tokens: undefined,
        detail: 'profile subject holds a NUL or an unpaired surrogate, which cannot be stored as text',
      }),
    );
    refusals.admit(
      syntheticCapture('acme', undefined, {
        outcome: 'unparseable',
        tokens: undefined,
        detail: 'profile subject holds a NUL or an unpaired surrogate, which cannot be stored as text',
      }),
    );
    await refusals.close();
    const rows = written.flat();
    expect(rows.map((row) => [row.errorCode, row.count])).to.deep.equal([
      [code, 1],
      [undefined, 1],
    ]);
    expect(rows[0]!.detail).to.not.contain('invented_');
    // The longest detail capture/ writes still fits the 200 characters the store keeps, whole.
    expect(rows[1]!.detail).to.match(
      /^summary: 1 more unparseable responses between .* \(profile subject holds a NUL or an unpaired surrogate, which cannot be stored as text\)$/,
    );
    expect(rows[1]!.detail!.replace('1 more', '1000000 more').length).to.be.at.most(200);
  });

  it('a summary Postgres does not take is tried again an interval later, with the next ones', async () => {
    const { refusals, time, written } = captureRefusals({ failWrites: 1 });
    refusals.admit(idpError('invalid_grant'));
    refusals.admit(idpError('invalid_grant'));
    time.advance(60_000);
    refusals.tick();
    await new Promise((resolve) => setImmediate(resolve));
    expect(written).to.deep.equal([]);
    refusals.admit(idpError('invalid_grant'));
    time.advance(30_000);
    refusals.tick();
    await new Promise((resolve) => setImmediate(resolve));
    expect(written).to.deep.equal([]);
    time.advance(30_000);
    refusals.tick();
    await new Promise((resolve) => setImmediate(resolve));
    expect(written.flat().map((row) => row.count)).to.deep.equal([1, 1]);
    await refusals.close();
  });
});
