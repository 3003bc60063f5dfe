// What the benchmarks share: progress lines on stderr, and tokens of realistic size.
import { randomUUID } from 'node:crypto';

export function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** A token of realistic size: JWT-shaped, base64url. */
export function fakeJwt(bytes: number): string {
  return ['eyJhbGciOiJSUzI1NiJ9', Buffer.alloc(bytes, randomUUID()).toString('base64url'), Buffer.alloc(256, randomUUID()).toString('base64url')].join('.');
}
