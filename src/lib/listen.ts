// Listening on a TCP address, as a promise: resolves once the server listens, rejects with the
// listen error (EADDRINUSE, EACCES) instead of leaving it to an 'error' event.
import type net from 'node:net';

export async function listen(server: net.Server, host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
