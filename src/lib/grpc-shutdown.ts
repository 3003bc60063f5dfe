// Stopping a grpc-js server the same way everywhere: calls in progress get a grace period to end
// on their own (tryShutdown), and whatever is still open after it is cut (forceShutdown).
import type * as grpc from '@grpc/grpc-js';

export function shutdownGrpcServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
