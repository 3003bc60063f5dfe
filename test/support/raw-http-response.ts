// What an HTTP/1.x server wrote, read from the socket bytes: the test IdP records every token
// response so tests can compare what the IdP wrote with what the client received through Envoy.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface RawHttpResponse {
  status: number;
  /** Header fields in wire order, names exactly as sent, values without surrounding whitespace. */
  headers: Array<[string, string]>;
  /** The body bytes (de-chunked when Transfer-Encoding: chunked). */
  body: Buffer;
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (typeof chunk === 'string') {
    return Buffer.from(chunk, typeof encoding === 'string' && Buffer.isEncoding(encoding) ? encoding : 'utf8');
  }
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.alloc(0);
}

function headerValues(headers: Array<[string, string]>, name: string): string[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

function dechunk(buf: Buffer, start: number): Buffer {
  const parts: Buffer[] = [];
  let pos = start;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
    if (lineEnd < 0) throw new Error('truncated chunked body (no chunk-size line)');
    const sizeField = buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeField)) throw new Error(`invalid chunk size ${JSON.stringify(sizeField)}`);
    const size = Number.parseInt(sizeField, 16);
    if (size === 0) return Buffer.concat(parts); // trailers, if any, are ignored
    const dataStart = lineEnd + 2;
    if (dataStart + size > buf.length) throw new Error('truncated chunked body');
    parts.push(buf.subarray(dataStart, dataStart + size));
    pos = dataStart + size + 2; // skip CRLF after chunk data
  }
}

/** Parses the bytes a server wrote for one HTTP/1.x response (skipping 1xx interim responses). */
export function parseRawHttpResponse(raw: Buffer, requestMethod = 'POST'): RawHttpResponse {
  let offset = 0;
  for (;;) {
    const headEnd = raw.indexOf('\r\n\r\n', offset, 'latin1');
    if (headEnd < 0) throw new Error('incomplete HTTP response head');
    const lines = raw.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const statusMatch = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(lines[0] ?? '');
    if (!statusMatch) throw new Error(`invalid status line ${JSON.stringify(lines[0])}`);
    const status = Number(statusMatch[1]);
    const headers: Array<[string, string]> = [];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      headers.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
    }
    offset = headEnd + 4;
    if (status >= 100 && status < 200 && status !== 101) continue;

    let body: Buffer;
    if (requestMethod === 'HEAD' || status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else if (headerValues(headers, 'transfer-encoding').some((v) => /(^|,)\s*chunked\s*$/i.test(v))) {
      body = dechunk(raw, offset);
    } else {
      const contentLength = headerValues(headers, 'content-length')[0];
      body = contentLength !== undefined ? raw.subarray(offset, offset + Number(contentLength)) : raw.subarray(offset);
    }
    return { status, headers, body: Buffer.from(body) };
  }
}

/**
 * Records every byte written to the connection while `res` is being sent and
 * parses it once the response has finished. Assumes no HTTP pipelining on the
 * connection (neither Envoy nor Node's fetch pipeline requests).
 */
export function captureRawResponse(req: IncomingMessage, res: ServerResponse, onResponse: (r: RawHttpResponse) => void): void {
  const socket: Socket = req.socket;
  const chunks: Buffer[] = [];
  const originalWrite = socket.write;
  const hadOwnWrite = Object.hasOwn(socket, 'write');
  let active = true;

  const wrapper = function (this: Socket, ...args: unknown[]): boolean {
    if (active) chunks.push(toBuffer(args[0], args[1]));
    return (originalWrite as (...a: unknown[]) => boolean).apply(this, args);
  };
  socket.write = wrapper as Socket['write'];

  const stop = (): void => {
    if (!active) return;
    active = false;
    if (socket.write === (wrapper as Socket['write'])) {
      if (hadOwnWrite) socket.write = originalWrite;
      else delete (socket as { write?: unknown }).write;
    }
  };

  // prependListener: run before Node's own 'finish' handler, which may hand the
  // socket to the next (pipelined) response and flush it synchronously.
  res.prependListener('finish', () => {
    stop();
    try {
      onResponse(parseRawHttpResponse(Buffer.concat(chunks), req.method));
    } catch (err) {
      console.error('oidc-idp: could not parse captured token response:', err);
    }
  });
  res.once('close', stop);
}
