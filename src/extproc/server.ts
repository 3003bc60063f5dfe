// The ExternalProcessor gRPC service. It owns the receive loop of each stream; an Exchange owns
// the HTTP exchange. Replies go out before anything else happens, and the finished response is
// handed off on a later tick, so Envoy never waits on parsing or on Postgres.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { ObservedResponse } from '../capture/types.js';
import { EXT_PROC_HEALTH_SERVICE, IDP_METADATA_KEY, ROUTE_METADATA_KEY, SUBJECT_FIELD_METADATA_KEY } from '../contract.js';
import { Exchange, type ExchangeLimits, type ExchangeRoute } from './exchange.js';
import { loadExtProc, type ExtProcStream, type ProcessingRequest } from './protocol.js';

/** What the receive loop logs; a pino Logger fits, and so does the ext_proc thread's forwarder. */
export interface StreamLogger {
  isLevelEnabled(level: string): boolean;
  trace(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

/** The stream gauges it keeps; the sidecar's Metrics fit. */
export interface StreamMetrics {
  extProcStreams: { inc(): void };
  extProcStreamsOpen: { inc(): void; dec(): void };
  extProcStreamErrors: { inc(): void };
  extProcStreamsIncomplete: { inc(): void };
}

/**
 * gRPC server options for the ext_proc service: room for the largest body collected plus framing;
 * channelz off (per-call bookkeeping nobody reads here, a few percent of each stream).
 */
function extProcServerOptions(maxBodyBytes: number): grpc.ServerOptions {
  return { 'grpc.max_receive_message_length': maxBodyBytes + 64 * 1024, 'grpc.enable_channelz': 0 };
}

export interface ExtProcHandlerOptions {
  limits: ExchangeLimits;
  onResponse: (observed: ObservedResponse) => void;
  logger: StreamLogger;
  metrics: StreamMetrics;
}

function metadataText(metadata: grpc.Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  const text = typeof value === 'string' ? value.trim() : undefined;
  return text ? text : undefined;
}

export function routeFrom(metadata: grpc.Metadata): ExchangeRoute {
  return {
    idp: metadataText(metadata, IDP_METADATA_KEY),
    kind: metadataText(metadata, ROUTE_METADATA_KEY) === 'profile' ? 'profile' : 'token',
    subjectField: metadataText(metadata, SUBJECT_FIELD_METADATA_KEY),
  };
}

// Envoy resets ext_proc streams instead of half-closing them, so these are ordinary ends.
function isNormalEnd(error: grpc.ServiceError): boolean {
  return error.code === grpc.status.CANCELLED || error.code === grpc.status.OK;
}

export function createExtProcHandlers(options: ExtProcHandlerOptions): grpc.UntypedServiceImplementation {
  const { limits, onResponse, logger, metrics } = options;

  function process(stream: ExtProcStream): void {
    const exchange = new Exchange(routeFrom(stream.metadata), limits);
    metrics.extProcStreams.inc();
    metrics.extProcStreamsOpen.inc();
    let closed = false;

    const handOff = (): ObservedResponse | undefined => {
      const observed = exchange.finish();
      if (observed) setImmediate(onResponse, observed);
      return observed;
    };
    const close = (): void => {
      if (closed) return;
      closed = true;
      metrics.extProcStreamsOpen.dec();
      // Complete responses were handed off when they completed; nothing is missing then.
      if (exchange.wasHandedOff) return;
      const observed = handOff();
      if (!observed?.complete) {
        // Envoy ends a stream early only when it gave up on it (deferred_close_timeout, a reset):
        // whatever of the response arrived is still judged, and the miss is counted.
        metrics.extProcStreamsIncomplete.inc();
        logger.warn({ idp: exchange.idp, responseSeen: observed !== undefined }, 'ext_proc stream ended before the whole response arrived');
      }
    };

    stream.on('data', (request: ProcessingRequest) => {
      const { reply, complete } = exchange.accept(request);
      if (logger.isLevelEnabled('trace')) {
        logger.trace({ idp: exchange.idp, message: request.request, observability: request.observability_mode === true, complete }, 'ext_proc message');
      }
      if (reply && !closed) stream.write(reply);
      if (!complete) return;
      handOff();
      // In observability mode Envoy would hold the stream open for deferred_close_timeout;
      // closing it says no more messages are needed.
      if (request.observability_mode && !closed) stream.end();
    });
    stream.on('end', () => {
      close();
      stream.end();
    });
    stream.on('error', (error: grpc.ServiceError) => {
      if (!isNormalEnd(error)) {
        metrics.extProcStreamErrors.inc();
        logger.warn({ idp: exchange.idp, grpcCode: error.code }, 'ext_proc stream ended with an error');
      }
      close();
    });
    stream.on('cancelled', close);
  }

  return { Process: process as grpc.handleBidiStreamingCall<ProcessingRequest, unknown> };
}

/**
 * Envoy's ExternalProcessor and grpc.health.v1 (answering for '' and the ext_proc service name) on
 * one grpc-js server, not yet bound: the listener (main thread) and the ext_proc thread both serve this.
 */
export function createExtProcServer(options: ExtProcHandlerOptions): { server: grpc.Server; setServing(serving: boolean): void } {
  const health = new HealthImplementation({ '': 'NOT_SERVING', [EXT_PROC_HEALTH_SERVICE]: 'NOT_SERVING' });
  const server = new grpc.Server(extProcServerOptions(options.limits.maxBodyBytes));
  server.addService(loadExtProc().service, createExtProcHandlers(options));
  health.addToServer(server);
  return {
    server,
    setServing(serving) {
      const status = serving ? 'SERVING' : 'NOT_SERVING';
      health.setStatus('', status);
      health.setStatus(EXT_PROC_HEALTH_SERVICE, status);
    },
  };
}

/** PEM: plaintext without; TLS with cert and key; mTLS when a client CA is given too. */
export function extProcCredentials(
  tls: { cert: Buffer | string; key: Buffer | string; clientCa?: Buffer | string | undefined } | undefined,
): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const clientCa = tls.clientCa ? Buffer.from(tls.clientCa) : null;
  return grpc.ServerCredentials.createSsl(clientCa, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }], clientCa !== null);
}
