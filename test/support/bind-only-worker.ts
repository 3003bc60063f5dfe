// An ext_proc thread that only binds its Unix socket, as bind(2) makes it, and never chmods it:
// what the socket's mode is then is the process umask's doing alone (test/integration/extproc-listen).
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import type { ExtProcThreadOptions, FromExtProcThread } from '../../src/extproc/thread-messages.js';

const options = workerData as ExtProcThreadOptions;
const port = parentPort!;
const server = net.createServer();
server.once('error', (error) => port.postMessage({ type: 'bind_failed', message: error.message } satisfies FromExtProcThread));
server.listen(options.listen.slice('unix:'.length), () => port.postMessage({ type: 'listening', port: 0, tid: undefined } satisfies FromExtProcThread));
port.on('message', (message: { type: string }) => {
  if (message.type === 'shutdown') server.close(() => port.postMessage({ type: 'closed' } satisfies FromExtProcThread));
});
