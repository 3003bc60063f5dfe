// An HTTP POST from a chosen local address (127.0.0.2 is loopback too), on a connection of its own:
// another client, as Envoy sees it, for tests of per-client limits.
import http from 'node:http';

export function postFrom(url: string, localAddress: string, options: { headers?: Record<string, string>; body?: string } = {}): Promise<number> {
  const target = new URL(url);
  return new Promise<number>((resolve, reject) => {
    const request = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        method: 'POST',
        localAddress,
        agent: false,
        headers: options.headers ?? {},
      },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode!));
      },
    );
    request.on('error', reject);
    request.end(options.body ?? '');
  });
}
