// The floor for the Envoy benchmark: the sidecar's own ext_proc receive loop (the same Exchange,
// the same replies, the same grpc-js server options) with the capture pipeline cut off. What B and
// C cost above this is the capture work; what this costs above A is Envoy's ext_proc filter plus
// grpc-js on this machine.
//   node dist/bench/extproc-floor.js PORT
import pino from 'pino';
import { createExtProcServer, extProcCredentials } from '../src/extproc/server.js';
import { createMetrics } from '../src/ops/metrics.js';

const port = Number(process.argv[2]);
const { server, setServing } = createExtProcServer({
  limits: { maxBodyBytes: 1024 * 1024 },
  onResponse: () => undefined,
  logger: pino({ level: 'silent' }),
  metrics: createMetrics(),
});
server.bindAsync(`127.0.0.1:${port}`, extProcCredentials(undefined), (error) => {
  if (error) throw error;
  // Envoy health-checks it as it does the sidecar: NOT_SERVING (the default) and Envoy never calls
  // it but fails every stream open, and the floor would be Envoy alone.
  setServing(true);
  process.stdout.write(`"listen":"127.0.0.1:${port}"\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
