// What the benchmarks share: progress lines on stderr, and tokens of realistic size.
import { randomUUID } from 'node:crypto';

export function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** A token of realistic size and shape: a JWT whose payload is JSON (id_tokens are decoded on read), unsigned. */
export function fakeJwt(bytes: number): string {
  const payload = Buffer.from(JSON.stringify({ jti: randomUUID(), pad: 'x'.repeat(Math.max(0, Math.round(bytes * 0.75) - 60)) })).toString('base64url');
  return ['eyJhbGciOiJSUzI1NiJ9', payload, Buffer.alloc(256, randomUUID()).toString('base64url')].join('.');
}
