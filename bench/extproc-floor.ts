// The floor for the Envoy benchmark: the sidecar's own ext_proc receive loop (the same Exchange,
// the same replies, the same grpc-js server options) with the capture pipeline cut off. What B and
// C cost above this is the capture work; what this costs above A is Envoy's ext_proc filter plus
// grpc-js on this machine.
//   node dist/bench/extproc-floor.js PORT
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { loadExtProc } from '../src/extproc/protocol.js';
import { createExtProcHandlers, extProcServerOptions } from '../src/extproc/server.js';
import { createMetrics } from '../src/ops/metrics.js';

const port = Number(process.argv[2]);
const server = new grpc.Server(extProcServerOptions(1024 * 1024));
server.addService(
  loadExtProc().service,
  createExtProcHandlers({ limits: { maxBodyBytes: 1024 * 1024 }, onResponse: () => undefined, logger: pino({ level: 'silent' }), metrics: createMetrics() }),
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) throw error;
  process.stdout.write(`"listen":"127.0.0.1:${port}"\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
