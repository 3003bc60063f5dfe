// Token responses an upstream IdP could send to hurt the sidecar: fields over their bounds, text
// Postgres cannot keep, lifetimes and id_token times no date can hold, deep JSON, invalid UTF-8, huge and compressed bodies, wrong types, bodies
// cut short. A fast-check arbitrary of plain (printable) shapes, and how each is put on the wire.
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { CLAIM_TIME_RANGE, FIELD_BOUNDS, LIFETIME_BOUNDS } from '../../src/capture/bounds.js';
import { fakeJwt } from './jwt.js';

/** Fields of a token response that can be made too big, and where each sits. */
const OVERSIZABLE = ['sub', 'email', 'iss', 'azp', 'access_token', 'refresh_token', 'id_token', 'token_type', 'scope', 'one_scope', 'extras', 'error'] as const;
const BOUND_OF: Record<(typeof OVERSIZABLE)[number], number> = {
  sub: FIELD_BOUNDS.subject,
  email: FIELD_BOUNDS.email,
  iss: FIELD_BOUNDS.issuer,
  azp: FIELD_BOUNDS.clientId,
  access_token: FIELD_BOUNDS.accessToken,
  refresh_token: FIELD_BOUNDS.refreshToken,
  id_token: FIELD_BOUNDS.idToken,
  token_type: FIELD_BOUNDS.tokenType,
  scope: FIELD_BOUNDS.scope,
  one_scope: FIELD_BOUNDS.scopeEach,
  extras: FIELD_BOUNDS.extras,
  error: FIELD_BOUNDS.errorCode,
};
const TEXT_FIELDS = ['sub', 'email', 'iss', 'azp', 'access_token', 'refresh_token', 'token_type', 'scope'] as const;
const CLAIMS = new Set(['sub', 'email', 'iss', 'azp']);

type Coding = 'identity' | 'gzip' | 'gzip_unlabelled';

/** Numbers that become dates in Postgres: a lifetime of the response, or a time claim of its id_token. */
const TIME_FIELDS = ['expires_in', 'refresh_token_expires_in', 'exp', 'iat', 'nbf'] as const;
/**
 * How far past its bound each value is: `over` seconds past it, or a number no date can hold
 * (1e300 made an invalid Date; 8.64e12 s is JS's last date; -8.64e12 s one before Postgres's first).
 */
const HUGE = ['over', '1e300', 'max_value', '8.64e12', '-8.64e12', 'twelve_digits'] as const;

export type HostileShape =
  | { kind: 'oversized'; field: (typeof OVERSIZABLE)[number]; over: number; form: boolean; coding: Coding }
  | { kind: 'unstorable'; field: (typeof TEXT_FIELDS)[number]; odd: 'nul' | 'high_surrogate' | 'low_surrogate'; form: boolean; coding: Coding }
  | { kind: 'huge_number'; field: (typeof TIME_FIELDS)[number]; value: (typeof HUGE)[number]; over: number; coding: Coding }
  | { kind: 'deep'; where: 'body' | 'claims'; depth: number; coding: Coding }
  | { kind: 'invalid_utf8'; bytes: readonly number[]; coding: Coding }
  | { kind: 'huge_body'; bytes: number; bomb: boolean }
  | { kind: 'cut_short'; keep: number; form: boolean; contentLength: boolean }
  | { kind: 'wrong_type'; field: string; value: unknown; coding: Coding }
  | { kind: 'junk'; bytes: Uint8Array; coding: Coding };

export interface HostileResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  /** Envoy gives up on the stream before its end: no end_of_stream is sent. */
  cutShort: boolean;
  /** Over a bound, not storable, unreadable or cut short: it must change no grant. */
  refused: boolean;
}

/** `maxBodyBytes`: the sidecar's collection limit (TOKEN_TAP_MAX_BODY_BYTES), for bodies past it. */
export function hostileShapes(maxBodyBytes: number): fc.Arbitrary<HostileShape> {
  const coding = fc.constantFrom<Coding>('identity', 'gzip', 'gzip_unlabelled');
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('oversized' as const),
        field: fc.constantFrom(...OVERSIZABLE),
        over: fc.integer({ min: 1, max: 4096 }),
        form: fc.boolean(),
        coding,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('unstorable' as const),
        field: fc.constantFrom(...TEXT_FIELDS),
        odd: fc.constantFrom('nul' as const, 'high_surrogate' as const, 'low_surrogate' as const),
        form: fc.boolean(),
        coding,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('huge_number' as const),
        field: fc.constantFrom(...TIME_FIELDS),
        value: fc.constantFrom(...HUGE),
        over: fc.integer({ min: 1, max: 1e9 }),
        coding,
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('deep' as const),
        where: fc.constantFrom('body' as const, 'claims' as const),
        depth: fc.integer({ min: 33, max: 20_000 }),
        coding,
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('invalid_utf8' as const),
        bytes: fc.constantFrom([0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]),
        coding,
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('huge_body' as const),
        bytes: fc.integer({ min: maxBodyBytes + 1, max: maxBodyBytes * 2 }),
        bomb: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('cut_short' as const),
        keep: fc.double({ min: 0.05, max: 0.98, noNaN: true }),
        form: fc.boolean(),
        contentLength: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('wrong_type' as const),
        field: fc.constantFrom('access_token', 'refresh_token', 'id_token', 'token_type', 'scope', 'expires_in', 'error', 'sub', 'email', 'iss', 'aud', 'azp'),
        value: fc.oneof(
          fc.integer(),
          fc.double(),
          fc.constant(1e308),
          fc.boolean(),
          fc.constant(null),
          fc.array(fc.oneof(fc.string(), fc.integer()), { maxLength: 5 }),
          fc.dictionary(fc.string({ maxLength: 5 }), fc.string(), { maxKeys: 3 }),
        ),
        coding,
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('junk' as const), bytes: fc.uint8Array({ maxLength: 4096 }), coding }) },
  );
}

/** Random ASCII of `bytes` bytes. */
function filler(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4) + 3)
    .toString('base64url')
    .slice(0, bytes);
}

function encode(fields: Record<string, unknown>, form: boolean): Buffer {
  if (!form) return Buffer.from(JSON.stringify(fields));
  return Buffer.from(
    new URLSearchParams(
      Object.entries(fields).map(([name, value]): [string, string] => [name, typeof value === 'string' ? value : JSON.stringify(value)]),
    ).toString(),
  );
}

function withCoding(body: Buffer, coding: Coding, headers: Array<[string, string]>): Buffer {
  if (coding === 'identity') return body;
  if (coding === 'gzip') headers.push(['content-encoding', 'gzip']);
  return gzipSync(body);
}

/** An ordinary response for `sub`, `change` applied to its claims and fields. */
function tokenFields(sub: string, claims: Record<string, unknown> = {}, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    access_token: `at-${filler(24)}`,
    refresh_token: `rt-${filler(24)}`,
    id_token: fakeJwt({ iss: 'https://hostile.example', sub, aud: 'okta', azp: 'okta', email: `${sub}@hostile.example`, exp: 4102444800, ...claims }),
    token_type: 'Bearer',
    scope: 'openid email',
    expires_in: 3600,
    ...fields,
  };
}

const ODD = { nul: '\u0000', high_surrogate: '\ud800', low_surrogate: '\udc00' };

/** The bytes and headers of `shape`, naming `sub` where the shape has a user. */
export function buildHostile(shape: HostileShape, sub: string): HostileResponse {
  const headers: Array<[string, string]> = [];
  const json = (): Array<[string, string]> => [['content-type', 'application/json']];
  switch (shape.kind) {
    case 'oversized': {
      const big = filler(BOUND_OF[shape.field] + shape.over);
      let fields: Record<string, unknown>;
      let status = 200;
      if (CLAIMS.has(shape.field)) fields = tokenFields(sub, { [shape.field]: big });
      else if (shape.field === 'id_token') fields = tokenFields(sub, { padding: big });
      else if (shape.field === 'one_scope') fields = tokenFields(sub, {}, { scope: `openid ${big}` });
      else if (shape.field === 'scope')
        fields = tokenFields(sub, {}, { scope: Array.from({ length: Math.ceil((BOUND_OF.scope + shape.over) / 8) }, () => filler(7)).join(' ') });
      else if (shape.field === 'extras') fields = tokenFields(sub, {}, { profile: big });
      else if (shape.field === 'error') {
        fields = { error: big, error_description: 'x' };
        status = 400;
      } else fields = tokenFields(sub, {}, { [shape.field]: big });
      headers.push(...(shape.form ? [['content-type', 'application/x-www-form-urlencoded'] as [string, string]] : json()));
      return { status, headers, body: withCoding(encode(fields, shape.form), shape.coding, headers), cutShort: false, refused: true };
    }
    case 'unstorable': {
      // A form cannot carry an unpaired surrogate: %ED%A0%80 decodes to U+FFFD, which is ordinary text.
      const odd = shape.form && !CLAIMS.has(shape.field) ? ODD.nul : ODD[shape.odd];
      const value = `${shape.field}-${odd}-value`;
      const fields = CLAIMS.has(shape.field) ? tokenFields(sub, { [shape.field]: value }) : tokenFields(sub, {}, { [shape.field]: value });
      headers.push(...(shape.form ? [['content-type', 'application/x-www-form-urlencoded'] as [string, string]] : json()));
      return { status: 200, headers, body: withCoding(encode(fields, shape.form), shape.coding, headers), cutShort: false, refused: true };
    }
    case 'huge_number': {
      const claim = !shape.field.endsWith('expires_in');
      // Lifetimes are refused only past their bound (a negative one is ignored); time claims either way.
      const bound = claim ? Date.now() / 1000 + CLAIM_TIME_RANGE : shape.field === 'expires_in' ? LIFETIME_BOUNDS.expiresIn : LIFETIME_BOUNDS.refreshExpiresIn;
      const values: Record<(typeof HUGE)[number], number | string> = {
        over: Math.ceil(bound) + shape.over,
        '1e300': 1e300,
        max_value: Number.MAX_VALUE,
        '8.64e12': 8.64e12,
        '-8.64e12': claim ? -8.64e12 : 8.64e12,
        twelve_digits: claim ? 1e12 : '999999999999',
      };
      const value = values[shape.value];
      const fields = claim ? tokenFields(sub, { [shape.field]: value }) : tokenFields(sub, {}, { [shape.field]: value });
      headers.push(...json());
      return { status: 200, headers, body: withCoding(encode(fields, false), shape.coding, headers), cutShort: false, refused: true };
    }
    case 'deep': {
      const nest = `${'['.repeat(shape.depth)}${']'.repeat(shape.depth)}`;
      let text: string;
      if (shape.where === 'body') text = JSON.stringify(tokenFields(sub)).replace(/}$/, `,"deep":${nest}}`);
      else {
        const payload = Buffer.from(`{"sub":${JSON.stringify(sub)},"deep":${nest}}`).toString('base64url');
        text = JSON.stringify({ ...tokenFields(sub), id_token: `${fakeJwt({}).split('.')[0]}.${payload}.c2ln` });
      }
      headers.push(...json());
      return { status: 200, headers, body: withCoding(Buffer.from(text), shape.coding, headers), cutShort: false, refused: true };
    }
    case 'invalid_utf8': {
      const text = JSON.stringify(tokenFields(sub, {}, { access_token: 'at-MARK' }));
      const [before, after] = text.split('MARK') as [string, string];
      headers.push(...json());
      return {
        status: 200,
        headers,
        body: withCoding(Buffer.concat([Buffer.from(before), Buffer.from(shape.bytes), Buffer.from(after)]), shape.coding, headers),
        cutShort: false,
        refused: true,
      };
    }
    case 'huge_body': {
      headers.push(...json());
      if (shape.bomb) {
        // Small on the wire, past the limit once decoded.
        headers.push(['content-encoding', 'gzip']);
        return {
          status: 200,
          headers,
          body: gzipSync(Buffer.concat([encode(tokenFields(sub), false), Buffer.alloc(shape.bytes, 0x20)])),
          cutShort: false,
          refused: true,
        };
      }
      return { status: 200, headers, body: encode(tokenFields(sub, {}, { padding: filler(shape.bytes) }), false), cutShort: false, refused: true };
    }
    case 'cut_short': {
      const whole = encode(tokenFields(sub), shape.form);
      headers.push(shape.form ? ['content-type', 'application/x-www-form-urlencoded'] : json()[0]!);
      if (shape.contentLength) headers.push(['content-length', String(whole.length)]);
      return { status: 200, headers, body: whole.subarray(0, Math.max(1, Math.floor(whole.length * shape.keep))), cutShort: true, refused: true };
    }
    case 'wrong_type': {
      const fields = ['sub', 'email', 'iss', 'aud', 'azp'].includes(shape.field)
        ? tokenFields(sub, { [shape.field]: shape.value })
        : tokenFields(sub, {}, { [shape.field]: shape.value });
      headers.push(...json());
      return { status: 200, headers, body: withCoding(encode(fields, false), shape.coding, headers), cutShort: false, refused: false };
    }
    case 'junk':
      return { status: 200, headers, body: withCoding(Buffer.from(shape.bytes), shape.coding, headers), cutShort: false, refused: false };
  }
}
