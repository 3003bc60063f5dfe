// An upstream that answers with exact bytes: each path serves the response a test sets for it,
// written raw on the socket, so "what the IdP sent" is known to the byte.
import http from 'node:http';
import type net from 'node:net';

export interface CannedResponse {
  status: number;
  reason?: string;
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface FixtureIdp {
  port: number;
  url(path: string): string;
  /** The response for `path`; for profile paths, keyed by the request's bearer token too. */
  serve(path: string, response: CannedResponse, bearerToken?: string): void;
  requests: Array<{ path: string; headers: Record<string, string> }>;
  close(): Promise<void>;
}

export function rawResponseBytes(response: CannedResponse): Buffer {
  const head = [`HTTP/1.1 ${response.status} ${response.reason ?? http.STATUS_CODES[response.status] ?? 'Status'}`];
  for (const [name, value] of response.headers) head.push(`${name}: ${value}`);
  return Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), response.body]);
}

/**
 * Adds Date and Content-Length, as every real IdP sends them, unless given. (A response without
 * Date gets one from Envoy, as RFC 9110 6.6.1 asks of a proxy with a clock.)
 */
export function canned(status: number, headers: Record<string, string>, body: Buffer | string): CannedResponse {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const list = Object.entries(headers);
  const has = (name: string) => list.some(([key]) => key.toLowerCase() === name);
  if (!has('date')) list.unshift(['Date', new Date().toUTCString()]);
  if (!has('content-length')) list.push(['Content-Length', String(bytes.length)]);
  return { status, headers: list, body: bytes };
}

export async function startFixtureIdp(): Promise<FixtureIdp> {
  const responses = new Map<string, CannedResponse>();
  const requests: FixtureIdp['requests'] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0]!;
      const headers = Object.fromEntries(Object.entries(req.headers).map(([name, value]) => [name, String(value)]));
      requests.push({ path, headers });
      const bearer = /^bearer\s+(\S+)/i.exec(headers.authorization ?? '')?.[1];
      const response = (bearer && responses.get(`${path}#${bearer}`)) || responses.get(path);
      // Write the canned bytes ourselves so nothing (Date, Connection) is added behind our back.
      const socket = res.socket!;
      socket.write(rawResponseBytes(response ?? canned(404, { 'Content-Type': 'text/plain' }, `no canned response for ${path}\n`)));
      res.detachSocket(socket);
      socket.end();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    serve(path, response, bearerToken) {
      responses.set(bearerToken ? `${path}#${bearerToken}` : path, response);
    },
    requests,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface RawReceived {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

/** A request as Okta's back end makes it, returning the response exactly as received. */
export async function sendRaw(url: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<RawReceived> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: options.method ?? 'POST', headers: options.headers, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const headers: Array<[string, string]> = [];
        for (let index = 0; index < response.rawHeaders.length; index += 2) headers.push([response.rawHeaders[index]!, response.rawHeaders[index + 1]!]);
        resolve({ status: response.statusCode ?? 0, headers, body: Buffer.concat(chunks) });
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(options.body);
  });
}
