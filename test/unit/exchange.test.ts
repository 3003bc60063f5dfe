import { expect } from 'chai';
import { bearerTokenOf, Exchange, type ExchangeRoute } from '../../src/extproc/exchange.js';
import type { ProcessingRequest } from '../../src/extproc/protocol.js';

const limits = { maxBodyBytes: 64 };
const tokenRoute = (idp: string | undefined): ExchangeRoute => ({ idp, kind: 'token', subjectField: undefined });

function responseHeaders(status: number, headers: Record<string, string>, endOfStream = false): ProcessingRequest {
  return {
    request: 'response_headers',
    response_headers: {
      headers: {
        headers: [
          { key: ':status', raw_value: Buffer.from(String(status)) },
          ...Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })),
        ],
      },
      end_of_stream: endOfStream,
    },
  };
}

function body(text: string, endOfStream: boolean, observability = false): ProcessingRequest {
  return { request: 'response_body', response_body: { body: Buffer.from(text), end_of_stream: endOfStream }, observability_mode: observability };
}

describe('extproc/Exchange', () => {
  it('answers each buffered-mode message with an empty CONTINUE of the same kind', () => {
    const exchange = new Exchange(tokenRoute('demo'), limits);
    expect(exchange.accept(responseHeaders(200, { 'content-type': 'application/json' })).reply).to.deep.equal({ response_headers: { response: {} } });
    const last = exchange.accept(body('{"a":1}', true));
    expect(last.reply).to.deep.equal({ response_body: { response: {} } });
    expect(last.complete).to.equal(true);
    expect(exchange.accept({ request: 'response_trailers', response_trailers: {} }).reply).to.deep.equal({ response_trailers: {} });
    expect(exchange.accept({ request: 'request_headers', request_headers: {} }).reply).to.deep.equal({ request_headers: { response: {} } });
  });

  it('never replies in observability mode', () => {
    const exchange = new Exchange(tokenRoute('demo'), limits);
    const headers = { ...responseHeaders(200, {}), observability_mode: true };
    expect(exchange.accept(headers).reply).to.equal(undefined);
    expect(exchange.accept(body('{}', true, true)).reply).to.equal(undefined);
  });

  it('reassembles a body sent in chunks, with status and lower-cased headers', () => {
    const exchange = new Exchange(tokenRoute('demo'), limits, () => 1234);
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
    const exchange = new Exchange(tokenRoute('demo'), limits);
    exchange.accept({ response_headers: { headers: { headers: [{ key: ':status', value: '400' }] }, end_of_stream: true } });
    expect(exchange.finish()!.status).to.equal(400);
  });

  it('completes on headers with end_of_stream and on trailers', () => {
    const headersOnly = new Exchange(tokenRoute('demo'), limits);
    expect(headersOnly.accept(responseHeaders(204, {}, true)).complete).to.equal(true);
    const withTrailers = new Exchange(tokenRoute('demo'), limits);
    withTrailers.accept(responseHeaders(200, {}));
    withTrailers.accept(body('{}', false));
    expect(withTrailers.accept({ response_trailers: {} }).complete).to.equal(true);
  });

  it('finishes a stream that ended without end_of_stream, judging completeness by content-length', () => {
    const whole = new Exchange(tokenRoute('demo'), limits);
    whole.accept(responseHeaders(200, { 'content-length': '2' }));
    whole.accept(body('{}', false));
    expect(whole.finish()!.complete).to.equal(true);
    const partial = new Exchange(tokenRoute('demo'), limits);
    partial.accept(responseHeaders(200, { 'content-length': '20' }));
    partial.accept(body('{"acc', false));
    const observed = partial.finish()!;
    expect(observed.complete).to.equal(false);
    expect(observed.body.toString()).to.equal('{"acc');
  });

  it('stops collecting past the body limit and marks the response truncated', () => {
    const exchange = new Exchange(tokenRoute('demo'), limits);
    exchange.accept(responseHeaders(200, {}));
    exchange.accept(body('x'.repeat(40), false));
    exchange.accept(body('y'.repeat(40), false));
    exchange.accept(body('z'.repeat(40), true));
    const observed = exchange.finish()!;
    expect(observed.bodyTruncated).to.equal(true);
    expect(observed.body.length).to.equal(64);
  });

  it('finishes once, and not at all when nothing was seen', () => {
    const empty = new Exchange(tokenRoute('demo'), limits);
    expect(empty.finish()).to.equal(undefined);
    const exchange = new Exchange(tokenRoute(undefined), limits);
    exchange.accept(responseHeaders(200, {}, true));
    expect(exchange.finish()!.idp).to.equal(undefined);
    expect(exchange.finish()).to.equal(undefined);
  });

  it('ignores messages after completion but still replies to them', () => {
    const exchange = new Exchange(tokenRoute('demo'), limits);
    exchange.accept(responseHeaders(200, {}));
    exchange.accept(body('{}', true));
    const late = exchange.accept(body('garbage', false));
    expect(late.reply).to.deep.equal({ response_body: { response: {} } });
    expect(exchange.finish()!.body.toString()).to.equal('{}');
  });

  it('on a profile route keeps only the bearer token of the request, and nothing on a token route', () => {
    const requestHeaders: ProcessingRequest = {
      request_headers: {
        headers: {
          headers: [
            { key: ':path', raw_value: Buffer.from('/user') },
            { key: 'Authorization', raw_value: Buffer.from('Bearer gho_abc123') },
            { key: 'cookie', raw_value: Buffer.from('session=s3cret') },
          ],
        },
      },
    };
    const profile = new Exchange({ idp: 'github', kind: 'profile', subjectField: 'id' }, limits);
    profile.accept(requestHeaders);
    profile.accept(responseHeaders(200, {}, true));
    const observed = profile.finish()!;
    expect(observed).to.include({ routeKind: 'profile', subjectField: 'id', bearerToken: 'gho_abc123' });
    expect(JSON.stringify([...observed.headers])).to.not.contain('s3cret');

    const token = new Exchange(tokenRoute('github'), limits);
    token.accept(requestHeaders);
    token.accept(responseHeaders(200, {}, true));
    expect(token.finish()!.bearerToken).to.equal(undefined);
  });

  it('reads Bearer and GitHub-style token authorization, and nothing else', () => {
    expect(bearerTokenOf('Bearer abc')).to.equal('abc');
    expect(bearerTokenOf('bearer abc ')).to.equal('abc');
    expect(bearerTokenOf('token gho_1')).to.equal('gho_1');
    expect(bearerTokenOf('Basic dXNlcjpwYXNz')).to.equal(undefined);
    expect(bearerTokenOf('Bearer')).to.equal(undefined);
  });
});
