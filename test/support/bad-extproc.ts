// An ext_proc server that speaks the protocol badly, over real gRPC, in the sidecar's place. It
// answers Envoy's health check SERVING (so Envoy keeps sending it streams) and then, per stream:
// - stall:       reads every message and never replies or closes (Envoy's message_timeout decides);
// - error:       ends each stream with gRPC INTERNAL as soon as the first message arrives;
// - wrong_reply: answers each message with a reply of another kind (a request_headers reply to
//                response headers, and so on), and one unasked-for reply besides.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { loadExtProc, type ExtProcStream, type ProcessingRequest } from '../../src/extproc/protocol.js';
import { EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';

export type BadBehaviour = 'stall' | 'error' | 'wrong_reply';

export interface BadExtProc {
  streams: number;
  messages: number;
  close(): Promise<void>;
}

const WRONG_KIND: Record<string, object> = {
  request_headers: { response_headers: { response: {} } },
  response_headers: { request_headers: { response: {} } },
  response_body: { request_body: { response: {} } },
  response_trailers: { request_trailers: {} },
};

export async function startBadExtProc(port: number, behaviour: BadBehaviour): Promise<BadExtProc> {
  const server = new grpc.Server();
  const state: BadExtProc = {
    streams: 0,
    messages: 0,
    async close() {
      server.forceShutdown();
    },
  };
  const process = (stream: ExtProcStream) => {
    state.streams += 1;
    stream.on('error', () => undefined);
    let first = true;
    stream.on('data', (request: ProcessingRequest) => {
      state.messages += 1;
      if (behaviour === 'stall') return;
      if (behaviour === 'error') {
        // grpc-js turns an 'error' on a server stream into the call's status.
        if (first) stream.emit('error', { code: grpc.status.INTERNAL, details: 'bad ext_proc: failing on purpose' });
        first = false;
        return;
      }
      const kind = Object.keys(WRONG_KIND).find((key) => key in request && (request as Record<string, unknown>)[key] !== undefined);
      if (!kind) return;
      stream.write(WRONG_KIND[kind] as never);
      if (first) stream.write({ response_trailers: {} } as never);
      first = false;
    });
    stream.on('end', () => {
      if (behaviour !== 'stall') stream.end();
    });
  };
  server.addService(loadExtProc().service, { Process: process as grpc.handleBidiStreamingCall<ProcessingRequest, unknown> });
  new HealthImplementation({ '': 'SERVING', [EXT_PROC_HEALTH_SERVICE]: 'SERVING' }).addToServer(server);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())),
  );
  return state;
}
