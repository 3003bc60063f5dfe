// Reading answers of servers we do not control (IdPs, Okta's authorization server) with a byte limit:
// the body is streamed and the read stops, cancelling the rest, as soon as it passes the limit, so a
// server that streams without end costs at most `limit` bytes of memory (and a little of the socket).

/** The body, or undefined when it is over `limit` bytes (the rest is cancelled, not read). */
export async function readLimited(response: Response, limit: number): Promise<Buffer | undefined> {
  if (!response.body) return Buffer.alloc(0);
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await response.body.cancel().catch(() => undefined);
    return undefined;
  }
  const reader = response.body.getReader();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => undefined);
        return undefined;
      }
      chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    }
  } finally {
    reader.releaseLock();
  }
  return Buffer.concat(chunks);
}

/**
 * A fetch for libraries that read the answer themselves (oauth4webapi's customFetch): the body is read
 * here with the limit and handed on as a buffered Response; over the limit, it throws.
 */
export function limitedFetch(limit: number, what: string): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const answer = await fetch(input, { ...init, redirect: 'error' });
    const body = await readLimited(answer, limit);
    if (body === undefined) throw new Error(`${what}: answer over ${limit} bytes`);
    return new Response(body.length > 0 ? body : null, { status: answer.status, statusText: answer.statusText, headers: answer.headers });
  }) as typeof fetch;
}
