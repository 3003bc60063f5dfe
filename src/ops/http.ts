// The operations listener: Prometheus /metrics, /healthz and /readyz over plain HTTP, by default
// on loopback (TOKEN_TAP_OPS_LISTEN). Nothing here reads a request body or echoes a request.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort } from '../config/values.js';
import type { SidecarHealth } from './health.js';
import type { Metrics } from './metrics.js';
import { describeError } from '../lib/error-description.js';
import { listen } from '../lib/listen.js';

export interface OpsServer {
  address: HostPort;
  close(): Promise<void>;
}

export interface OpsServerOptions {
  listen: HostPort;
  metrics: Metrics;
  health: SidecarHealth;
  logger: Logger;
}

function send(response: http.ServerResponse, status: number, contentType: string, body: string): void {
  response.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

function handler({ metrics, health, logger }: OpsServerOptions): http.RequestListener {
  return (request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD');
      send(response, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    switch (path) {
      case '/metrics':
        metrics.registry.metrics().then(
          (text) => send(response, 200, metrics.registry.contentType, text),
          (error: unknown) => {
            logger.warn({ err: describeError(error) }, 'cannot collect metrics');
            send(response, 500, 'text/plain; charset=utf-8', 'cannot collect metrics\n');
          },
        );
        return;
      case '/healthz': {
        const liveness = health.liveness();
        if (liveness.live) send(response, 200, 'text/plain; charset=utf-8', 'ok\n');
        else send(response, 503, 'text/plain; charset=utf-8', `unhealthy: ${liveness.failure}\n`);
        return;
      }
      case '/readyz': {
        const { ready, body } = health.readiness();
        send(response, ready ? 200 : 503, 'application/json', `${JSON.stringify(body)}\n`);
        return;
      }
      default:
        send(response, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
    }
  };
}

/**
 * Starts the listener. When the address cannot be bound the sidecar goes on without it (capturing
 * matters more than its dashboards): the error is logged and undefined returned.
 */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer | undefined> {
  const server = http.createServer(handler(options));
  server.keepAliveTimeout = 5_000;
  const where = formatHostPort(options.listen);
  try {
    await listen(server, options.listen.host, options.listen.port);
  } catch (error) {
    options.logger.error(
      { listen: where, err: describeError(error) },
      'cannot listen for /metrics, /healthz and /readyz (TOKEN_TAP_OPS_LISTEN); going on without them',
    );
    return undefined;
  }
  server.on('error', (error) => options.logger.warn({ err: { message: error.message } }, 'ops HTTP server error'));
  const { port } = server.address() as AddressInfo;
  const address = { host: options.listen.host, port };
  options.logger.info({ opsListen: formatHostPort(address) }, 'ops HTTP server ready (/metrics, /healthz, /readyz)');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
