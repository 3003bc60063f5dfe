// A loopback TCP proxy that can turn into a blackhole: connections stay open but nothing is
// forwarded either way, and new connections are accepted and left unanswered, as a network
// partition (or a Postgres host that froze) looks to a client. Nothing is reset, so only the
// client's own timeouts can notice. After heal(), new connections are forwarded again, while those
// opened before the blackhole stay dead for good, as flows lost in a failover or NAT flush do.
import net from 'node:net';

export interface BlackholeProxy {
  port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  blackhole(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startBlackholeProxy(target: { host: string; port: number }): Promise<BlackholeProxy> {
  const sockets = new Set<net.Socket>();
  /** Connections accepted during the blackhole, waiting for heal(). */
  const held: net.Socket[] = [];
  /** Connections forwarding now; frozen (left dead) by blackhole(). */
  const live = new Set<net.Socket>();
  let holed = false;
  let accepted = 0;

  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  };

  const forward = (client: net.Socket) => {
    const upstream = net.connect(target.port, target.host);
    track(upstream);
    live.add(client);
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => client.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.resume();
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted += 1;
    track(client);
    if (holed) held.push(client);
    else forward(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    blackhole() {
      holed = true;
      // Frozen, not closed: no FIN, no RST, no data, in either direction.
      for (const client of live) {
        client.removeAllListeners('data');
        client.pause();
      }
      for (const socket of sockets) {
        if (!live.has(socket)) {
          socket.removeAllListeners('data');
          socket.pause();
        }
      }
      live.clear();
    },
    heal() {
      holed = false;
      for (const client of held.splice(0)) if (!client.destroyed) forward(client);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
