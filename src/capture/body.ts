// Decoding a copy of the response body. The relayed bytes are never touched; this only
// decides what we can read, under a cap on the decoded size that stops decompression bombs.
import { brotliDecompressSync, gunzipSync, inflateSync, inflateRawSync } from 'node:zlib';

export type DecodedBody = { kind: 'decoded'; bytes: Buffer } | { kind: 'too_large'; detail: string } | { kind: 'undecodable'; detail: string };

const GZIP_MAGIC = [0x1f, 0x8b];

function looksGzipped(body: Buffer): boolean {
  return body.length >= 2 && body[0] === GZIP_MAGIC[0] && body[1] === GZIP_MAGIC[1];
}

function inflateEither(body: Buffer, maxOutputLength: number): Buffer {
  // "deflate" means zlib-wrapped by the RFC, but some servers send raw deflate.
  try {
    return inflateSync(body, { maxOutputLength });
  } catch (error) {
    if (isTooLarge(error)) throw error;
    return inflateRawSync(body, { maxOutputLength });
  }
}

function isTooLarge(error: unknown): boolean {
  return error instanceof RangeError || (error as NodeJS.ErrnoException)?.code === 'ERR_BUFFER_TOO_LARGE';
}

/** The codings decoded, by the name a detail gives them: a detail never quotes the header, which the IdP writes. */
const CODING_NAMES: ReadonlyMap<string, string> = new Map([
  ['gzip', 'gzip'],
  ['x-gzip', 'gzip'],
  ['deflate', 'deflate'],
  ['br', 'br'],
]);

/** More codings than any server applies; each one is a pass over the body, so an IdP could make us decode it thousands of times. */
export const MAX_CODINGS = 4;

/**
 * Decodes `content-encoding` (gzip, x-gzip, deflate, br, identity; several in order) and gzip
 * recognised by its magic bytes when a hop stripped the header.
 */
export function decodeBody(body: Buffer, contentEncoding: string | undefined, maxDecodedBytes: number): DecodedBody {
  const codings = (contentEncoding ?? '')
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding.length > 0 && coding !== 'identity');
  if (codings.length === 0 && looksGzipped(body)) codings.push('gzip');
  if (codings.length > MAX_CODINGS) return { kind: 'undecodable', detail: `more than ${MAX_CODINGS} content-codings` };
  if (codings.some((coding) => !CODING_NAMES.has(coding))) return { kind: 'undecodable', detail: 'unsupported content-encoding' };
  let bytes = body;
  let current = '';
  try {
    // Codings are listed in the order they were applied; undo them in reverse.
    for (const coding of [...codings].reverse()) {
      current = CODING_NAMES.get(coding)!;
      if (current === 'gzip') bytes = gunzipSync(bytes, { maxOutputLength: maxDecodedBytes });
      else if (current === 'deflate') bytes = inflateEither(bytes, maxDecodedBytes);
      else bytes = brotliDecompressSync(bytes, { maxOutputLength: maxDecodedBytes });
    }
  } catch (error) {
    if (isTooLarge(error)) return { kind: 'too_large', detail: `decoded body exceeds ${maxDecodedBytes} bytes` };
    return { kind: 'undecodable', detail: `corrupt ${current} body` };
  }
  if (bytes.length > maxDecodedBytes) return { kind: 'too_large', detail: `body exceeds ${maxDecodedBytes} bytes` };
  return { kind: 'decoded', bytes };
}
