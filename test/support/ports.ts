import net from 'node:net';

/** A TCP port free on loopback right now (the OS picks it). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port;
}

/** A tuple of N numbers, so that destructured ports are numbers. */
type Ports<N extends number, Acc extends number[] = []> = Acc['length'] extends N ? Acc : Ports<N, [number, ...Acc]>;

/**
 * `count` distinct TCP ports free on loopback right now: each is held until all are picked, since
 * freePort() twice in a row may hand out the same port (the first is closed before the second is asked).
 */
export async function freePorts<N extends number>(count: N): Promise<Ports<N>> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let index = 0; index < count; index += 1) {
      const server = net.createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
        }),
      );
    }
    return ports as Ports<N>;
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

export { waitFor } from '../../src/lib/wait-for.js';
