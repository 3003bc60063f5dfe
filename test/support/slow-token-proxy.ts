// A loopback HTTP proxy in front of an IdP's token endpoint that holds each request before
// forwarding it (an IdP slow to answer a refresh), and notes the refresh token each request
// presents, arriving and forwarded, so a test can count how often the IdP saw one. A request whose
// client went away during the hold (a sidecar killed) is dropped, never forwarded: the IdP never
// saw it. Test-only: the tokens are the test IdP's.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SlowTokenProxy {
  /** The token URL through the proxy. */
  url: string;
  /** How long the next requests are held before they are forwarded (ms); change it at any time. */
  holdMs: number;
  /** The refresh token of each request that arrived, in order ('' for other grant types). */
  readonly arrived: string[];
  /** The refresh token of each request forwarded to the IdP. */
  readonly forwarded: string[];
  /** Requests dropped because their client went away during the hold. */
  readonly dropped: number;
  /** Resolves once `count` requests have arrived. */
  whenArrived(count: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startSlowTokenProxy(tokenUrl: string): Promise<SlowTokenProxy> {
  const arrived: string[] = [];
  const forwarded: string[] = [];
  let dropped = 0;
  const waiters = new Set<() => void>();
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      const refreshToken = new URLSearchParams(body.toString('utf8')).get('refresh_token') ?? '';
      arrived.push(refreshToken);
      for (const wake of waiters) wake();
      let sent = false;
      const timer = setTimeout(async () => {
        sent = true;
        forwarded.push(refreshToken);
        const headers: Record<string, string> = {};
        for (const name of ['authorization', 'content-type', 'accept']) if (request.headers[name]) headers[name] = String(request.headers[name]);
        try {
          const answer = await fetch(tokenUrl, { method: 'POST', headers, body });
          const answerBody = Buffer.from(await answer.arrayBuffer());
          response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json', 'cache-control': 'no-store' });
          response.end(answerBody);
        } catch {
          response.destroy();
        }
      }, proxy.holdMs);
      response.on('close', () => {
        if (sent) return;
        clearTimeout(timer);
        dropped += 1;
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const path = new URL(tokenUrl).pathname;
  const proxy: SlowTokenProxy = {
    url: `http://127.0.0.1:${port}${path}`,
    holdMs: 0,
    arrived,
    forwarded,
    get dropped() {
      return dropped;
    },
    whenArrived(count, timeoutMs = 15_000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`the token proxy saw ${arrived.length} requests, not ${count}, within ${timeoutMs} ms`));
        }, timeoutMs);
        const check = () => {
          if (arrived.length < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
