// Property definitions shared by the unit suite (a few thousand runs) and scripts/fuzz (100,000+).
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { CLAIM_TIME_RANGE, FIELD_BOUNDS, LIFETIME_BOUNDS, TIME_CLAIMS } from '../../src/capture/bounds.js';
import { captureFrom } from '../../src/capture/capture.js';
import { readTokenResponse } from '../../src/capture/token-response.js';
import type { CaptureOutcome, ObservedResponse } from '../../src/capture/types.js';
import { Exchange } from '../../src/extproc/exchange.js';
import type { ProcessingRequest } from '../../src/extproc/protocol.js';
import { fakeJwt } from './jwt.js';

const OUTCOMES: CaptureOutcome[] = ['stored', 'idp_error', 'unparseable', 'too_large', 'incomplete', 'no_subject'];
const MAX = 4096;

/** Bodies that look like token responses often enough to reach deep into the parser. */
const tokenish = fc.oneof(
  fc.uint8Array({ maxLength: 512 }).map((bytes) => Buffer.from(bytes)),
  fc.jsonValue({ maxDepth: 6 }).map((value) => Buffer.from(JSON.stringify(value) ?? 'null')),
  fc
    .dictionary(
      fc.constantFrom(
        'access_token',
        'id_token',
        'refresh_token',
        'expires_in',
        'scope',
        'token_type',
        'error',
        'ok',
        'authed_user',
        '__proto__',
        'constructor',
        'error_codes',
      ),
      fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 3 })),
    )
    .map((fields) => Buffer.from(JSON.stringify(fields))),
  fc
    .array(fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 24 })), { maxLength: 8 })
    .map((pairs) => Buffer.from(new URLSearchParams(pairs).toString())),
  fc.nat(300).map((depth) => Buffer.from(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)),
);

/** A value of some size around a bound, sometimes with a NUL or an unpaired surrogate planted in it. */
function around(bound: number, planted: string): fc.Arbitrary<string> {
  return fc
    .tuple(fc.integer({ min: Math.max(0, bound - 8), max: bound + 8 }), fc.constantFrom('', '\u0000', '\ud800', '\udc00', '\ud83d\ude00', '€'))
    .map(([length, odd]) => `${planted}${odd}${'x'.repeat(Math.max(0, length - planted.length))}`);
}

/** A number a second or so either side of `bound`, one no real IdP sends (1e300; JS's Date limit, 8.64e12 s), or any double. */
function aroundNumber(bound: number): fc.Arbitrary<number | string> {
  return fc.oneof(
    fc.integer({ min: -2, max: 2 }).map((delta) => bound + delta),
    fc.constantFrom<number | string>(1e300, -1e300, Number.MAX_VALUE, 8.64e12, -8.64e12, Number.MAX_SAFE_INTEGER, '999999999999'),
    fc.double({ noNaN: true }),
  );
}

/** When the responses of these properties arrived (observed() below): the id_token's time claims must lie near it. */
const OBSERVED_AT_SECONDS = 0;

/** A lifetime or an id_token time claim near its bound or far past it. */
const timeFields = fc.oneof(
  fc.record({ expires_in: aroundNumber(LIFETIME_BOUNDS.expiresIn) }).map((fields) => ({ fields, claims: {} })),
  fc.record({ refresh_token_expires_in: aroundNumber(LIFETIME_BOUNDS.refreshExpiresIn) }).map((fields) => ({ fields, claims: {} })),
  fc.tuple(fc.constantFrom(...TIME_CLAIMS), fc.constantFrom(1, -1), fc.boolean()).chain(([claim, sign, near]) =>
    (near ? aroundNumber(OBSERVED_AT_SECONDS + sign * CLAIM_TIME_RANGE) : aroundNumber(sign * 1e13)).map((value) => ({
      fields: {},
      claims: { [claim]: value },
    })),
  ),
  fc.constant({ fields: {}, claims: {} }),
);

/** Token responses with one or two fields near their bounds; `planted` marks the values so a detail that echoes one is caught. */
const boundedFields = fc.string({ minLength: 12, maxLength: 12 }).chain((seed) => {
  const planted = `P${Buffer.from(seed).toString('hex').slice(0, 16)}`;
  const claim = (name: string, bound: number) => fc.record({ [name]: around(bound, planted) });
  return fc
    .tuple(
      fc.oneof(
        claim('sub', FIELD_BOUNDS.subject),
        claim('email', FIELD_BOUNDS.email),
        claim('iss', FIELD_BOUNDS.issuer),
        claim('azp', FIELD_BOUNDS.clientId),
        fc.constant({}),
      ),
      fc.oneof(
        claim('access_token', FIELD_BOUNDS.accessToken),
        claim('refresh_token', FIELD_BOUNDS.refreshToken),
        claim('token_type', FIELD_BOUNDS.tokenType),
        claim('scope', FIELD_BOUNDS.scopeEach),
        claim('scope', FIELD_BOUNDS.scope),
        claim('picture', FIELD_BOUNDS.extras),
        fc.constant({}),
      ),
      timeFields,
    )
    .map(([claims, fields, times]) => ({
      planted,
      body: Buffer.from(JSON.stringify({ access_token: 'at', id_token: fakeJwt({ sub: 'user', ...claims, ...times.claims }), ...fields, ...times.fields })),
    }));
});

const encoded = fc.tuple(tokenish, fc.constantFrom(undefined, 'gzip', 'deflate', 'br', 'gzip, br', 'compress', 'identity')).map(([body, coding]) => {
  const apply: Record<string, (input: Buffer) => Buffer> = { gzip: gzipSync, deflate: deflateSync, br: brotliCompressSync };
  const bytes = (coding ?? '')
    .split(',')
    .map((part) => part.trim())
    .reduce<Buffer>((current, part) => apply[part]?.(current) ?? current, body);
  return { body: bytes, coding };
});

function observed(body: Buffer, status: number, coding: string | undefined, truncated: boolean, complete = true): ObservedResponse & { idp: string } {
  return {
    idp: 'fuzz',
    routeKind: 'token',
    subjectField: undefined,
    bearerToken: undefined,
    status,
    headers: new Map(coding ? [['content-encoding', coding]] : []),
    body,
    bodyTruncated: truncated,
    complete,
    startedAt: OBSERVED_AT_SECONDS * 1000,
  };
}

const message: fc.Arbitrary<ProcessingRequest> = fc.oneof(
  fc.record({
    response_headers: fc.record({
      headers: fc.record({
        headers: fc.array(
          fc.record({
            key: fc.constantFrom(':status', 'content-type', 'Content-Length', 'content-encoding', 'x-other'),
            raw_value: fc.string({ maxLength: 20 }).map((text) => Buffer.from(text)),
          }),
          { maxLength: 5 },
        ),
      }),
      end_of_stream: fc.boolean(),
    }),
    observability_mode: fc.boolean(),
  }),
  fc.record({
    response_body: fc.record({ body: fc.uint8Array({ maxLength: 2048 }).map((bytes) => Buffer.from(bytes)), end_of_stream: fc.boolean() }),
    observability_mode: fc.boolean(),
  }),
  fc.record({
    request_headers: fc.record({ headers: fc.record({ headers: fc.constant([{ key: 'authorization', raw_value: Buffer.from('Bearer x') }]) }) }),
    observability_mode: fc.boolean(),
  }),
  fc.record({ response_trailers: fc.constant({}), observability_mode: fc.boolean() }),
  fc.constant({} as ProcessingRequest),
) as fc.Arbitrary<ProcessingRequest>;

const REPLY_KIND: Record<string, string> = {
  request_headers: 'request_headers',
  response_headers: 'response_headers',
  response_body: 'response_body',
  response_trailers: 'response_trailers',
};

export interface NamedProperty {
  name: string;
  property: fc.IProperty<unknown>;
}

function named<T>(name: string, property: fc.IProperty<T>): NamedProperty {
  return { name, property: property as unknown as fc.IProperty<unknown> };
}

export const properties: NamedProperty[] = [
  named(
    'the token-response reader never throws and always names a known kind',
    fc.property(tokenish, fc.integer({ min: 100, max: 599 }), (body, status) => {
      const result = readTokenResponse(status, body);
      return ['tokens', 'idp_error', 'unparseable'].includes(result.kind);
    }),
  ),
  named(
    'capture never throws, never mutates the body, always ends in a known outcome, and never pollutes prototypes',
    fc.property(encoded, fc.integer({ min: 100, max: 599 }), fc.boolean(), fc.boolean(), ({ body, coding }, status, truncated, complete) => {
      const before = Buffer.from(body);
      const capture = captureFrom(observed(body, status, coding, truncated, complete), { maxDecodedBytes: MAX });
      const clean = ({} as Record<string, unknown>).polluted === undefined && Object.keys(Object.prototype).length === 0;
      const tokensOnlyWhenUsable = capture.tokens === undefined || capture.outcome === 'stored' || capture.outcome === 'no_subject';
      const incompleteNeverRead = complete || (capture.outcome === 'incomplete' && capture.tokens === undefined && capture.subject === undefined);
      return OUTCOMES.includes(capture.outcome) && body.equals(before) && clean && tokensOnlyWhenUsable && incompleteNeverRead;
    }),
  ),
  named(
    'a capture that keeps tokens has every field within its bound and storable as text, its lifetimes and time claims too; a refusal never echoes the value',
    fc.property(boundedFields, ({ body, planted }) => {
      const capture = captureFrom(observed(body, 200, undefined, false), { maxDecodedBytes: 1024 * 1024 });
      if (capture.detail?.includes(planted)) return false;
      if (capture.tokens === undefined) return capture.outcome !== 'stored' && capture.outcome !== 'no_subject';
      const { tokens } = capture;
      const within = (field: keyof typeof FIELD_BOUNDS, value: string | undefined) =>
        value === undefined || (Buffer.byteLength(value) <= FIELD_BOUNDS[field] && !/\u0000/.test(value) && value === Buffer.from(value).toString());
      return (
        within('subject', capture.subject) &&
        within('email', capture.email) &&
        within('issuer', capture.issuer) &&
        within('clientId', capture.clientId) &&
        within('tokenType', tokens.tokenType) &&
        within('accessToken', tokens.accessToken) &&
        within('refreshToken', tokens.refreshToken) &&
        within('idToken', tokens.idToken) &&
        within('scope', tokens.scope.join(' ')) &&
        tokens.scope.every((scope) => within('scopeEach', scope)) &&
        Buffer.byteLength(JSON.stringify(tokens.extras)) <= FIELD_BOUNDS.extras &&
        (tokens.expiresIn === undefined || tokens.expiresIn <= LIFETIME_BOUNDS.expiresIn) &&
        (tokens.refreshExpiresIn === undefined || tokens.refreshExpiresIn <= LIFETIME_BOUNDS.refreshExpiresIn) &&
        TIME_CLAIMS.every((claim) => {
          const value = tokens.claims?.[claim];
          return typeof value !== 'number' || Math.abs(value - OBSERVED_AT_SECONDS) <= CLAIM_TIME_RANGE;
        })
      );
    }),
  ),
  named(
    'the Exchange, fed any ext_proc message sequence, never throws, replies in kind (never in observability mode), and keeps the body within its limit and unmodified',
    fc.property(fc.array(message, { maxLength: 12 }), fc.boolean(), (messages, finishEarly) => {
      const exchange = new Exchange({ idp: 'fuzz', kind: 'token', subjectField: undefined }, { maxBodyBytes: MAX });
      const sent: Buffer[] = [];
      for (const request of messages) {
        const copy = request.response_body?.body ? Buffer.from(request.response_body.body) : undefined;
        const { reply } = exchange.accept(request);
        if (copy && !copy.equals(request.response_body!.body!)) return false;
        const kind = Object.keys(REPLY_KIND).find((key) => key in request);
        if (request.observability_mode && reply !== undefined) return false;
        if (!request.observability_mode && kind && (reply === undefined || !(REPLY_KIND[kind]! in reply))) return false;
        if (!kind && reply !== undefined) return false;
        if (request.response_body?.body) sent.push(request.response_body.body);
        if (finishEarly) break;
      }
      const result = exchange.finish();
      if (!result) return true;
      const all = Buffer.concat(sent);
      // What was kept is a prefix of what came (it may stop at end_of_stream or the limit).
      return result.body.length <= MAX && all.subarray(0, result.body.length).equals(result.body) && exchange.finish() === undefined;
    }),
  ),
];
