import { expect } from 'chai';
import { Exchange } from '../../src/extproc/exchange.js';
import type { ProcessingRequest } from '../../src/extproc/protocol.js';

const limits = { maxBodyBytes: 64 };

function responseHeaders(status: number, headers: Record<string, string>, endOfStream = false): ProcessingRequest {
  return {
    request: 'response_headers',
    response_headers: {
      headers: { headers: [{ key: ':status', raw_value: Buffer.from(String(status)) }, ...Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value) }))] },
      end_of_stream: endOfStream,
    },
  };
}

function body(text: string, endOfStream: boolean, observability = false): ProcessingRequest {
  return { request: 'response_body', response_body: { body: Buffer.from(text), end_of_stream: endOfStream }, observability_mode: observability };
}

describe('extproc/Exchange', () => {
  it('answers each buffered-mode message with an empty CONTINUE of the same kind', () => {
    const exchange = new Exchange('demo', limits);
    expect(exchange.accept(responseHeaders(200, { 'content-type': 'application/json' })).reply).to.deep.equal({ response_headers: { response: {} } });
    const last = exchange.accept(body('{"a":1}', true));
    expect(last.reply).to.deep.equal({ response_body: { response: {} } });
    expect(last.complete).to.equal(true);
    expect(exchange.accept({ request: 'response_trailers', response_trailers: {} }).reply).to.deep.equal({ response_trailers: {} });
    expect(exchange.accept({ request: 'request_headers', request_headers: {} }).reply).to.deep.equal({ request_headers: { response: {} } });
  });

  it('never replies in observability mode', () => {
    const exchange = new Exchange('demo', limits);
    const headers = { ...responseHeaders(200, {}), observability_mode: true };
    expect(exchange.accept(headers).reply).to.equal(undefined);
    expect(exchange.accept(body('{}', true, true)).reply).to.equal(undefined);
  });

  it('reassembles a body sent in chunks, with status and lower-cased headers', () => {
    const exchange = new Exchange('demo', limits, () => 1234);
    exchange.accept(responseHeaders(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }));
    exchange.accept(body('{"access_', false));
    exchange.accept(body('token":"x"}', true));
    const observed = exchange.finish()!;
    expect(observed.status).to.equal(200);
    expect(observed.idp).to.equal('demo');
    expect(observed.headers.get('content-type')).to.equal('application/json');
    expect(observed.headers.get('cache-control')).to.equal('no-store');
    expect(observed.body.toString()).to.equal('{"access_token":"x"}');
    expect(observed.complete).to.equal(true);
    expect(observed.bodyTruncated).to.equal(false);
    expect(observed.startedAt).to.equal(1234);
  });

  it('reads header values sent as value instead of raw_value', () => {
    const exchange = new Exchange('demo', limits);
    exchange.accept({ response_headers: { headers: { headers: [{ key: ':status', value: '400' }] }, end_of_stream: true } });
    expect(exchange.finish()!.status).to.equal(400);
  });

  it('completes on headers with end_of_stream and on trailers', () => {
    const headersOnly = new Exchange('demo', limits);
    expect(headersOnly.accept(responseHeaders(204, {}, true)).complete).to.equal(true);
    const withTrailers = new Exchange('demo', limits);
    withTrailers.accept(responseHeaders(200, {}));
    withTrailers.accept(body('{}', false));
    expect(withTrailers.accept({ response_trailers: {} }).complete).to.equal(true);
  });

  it('finishes a stream that ended without end_of_stream, judging completeness by content-length', () => {
    const whole = new Exchange('demo', limits);
    whole.accept(responseHeaders(200, { 'content-length': '2' }));
    whole.accept(body('{}', false));
    expect(whole.finish()!.complete).to.equal(true);
    const partial = new Exchange('demo', limits);
    partial.accept(responseHeaders(200, { 'content-length': '20' }));
    partial.accept(body('{"acc', false));
    const observed = partial.finish()!;
    expect(observed.complete).to.equal(false);
    expect(observed.body.toString()).to.equal('{"acc');
  });

  it('stops collecting past the body limit and marks the response truncated', () => {
    const exchange = new Exchange('demo', limits);
    exchange.accept(responseHeaders(200, {}));
    exchange.accept(body('x'.repeat(40), false));
    exchange.accept(body('y'.repeat(40), false));
    exchange.accept(body('z'.repeat(40), true));
    const observed = exchange.finish()!;
    expect(observed.bodyTruncated).to.equal(true);
    expect(observed.body.length).to.equal(64);
  });

  it('finishes once, and not at all when nothing was seen', () => {
    const empty = new Exchange('demo', limits);
    expect(empty.finish()).to.equal(undefined);
    const exchange = new Exchange(undefined, limits);
    exchange.accept(responseHeaders(200, {}, true));
    expect(exchange.finish()!.idp).to.equal(undefined);
    expect(exchange.finish()).to.equal(undefined);
  });

  it('ignores messages after completion but still replies to them', () => {
    const exchange = new Exchange('demo', limits);
    exchange.accept(responseHeaders(200, {}));
    exchange.accept(body('{}', true));
    const late = exchange.accept(body('garbage', false));
    expect(late.reply).to.deep.equal({ response_body: { response: {} } });
    expect(exchange.finish()!.body.toString()).to.equal('{}');
  });
});
