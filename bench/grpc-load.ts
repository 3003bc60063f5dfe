// GetGrant load over gRPC for the API benchmarks (token-vault.ts, and the floor of token-exchange.ts).
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { loadTokenVault } from '../src/api/protocol.js';
import { waitFor } from '../src/lib/wait-for.js';
import type { Outcome } from './open-loop.js';

/**
 * The load generator speaks gRPC over node:http2 directly, with every request encoded beforehand:
 * it shares the machine's cores with the sidecar and Postgres, and a full gRPC client would spend
 * more of them per call than the server does.
 */
export class GrpcLoad {
  private readonly sessions: http2.ClientHttp2Session[];
  private readonly frames: Buffer[];
  private next = 0;

  constructor(
    port: number,
    channels: number,
    private readonly apiKey: string,
    /** Users user-0 ... user-(grants - 1) of IdP `bench`. */
    grants: number,
  ) {
    // A refused or dropped connection fails its streams, which count it; the session event is not needed.
    this.sessions = Array.from({ length: channels }, () => http2.connect(`http://127.0.0.1:${port}`).on('error', () => undefined));
    const serialize = (loadTokenVault().service.GetGrant as grpc.MethodDefinition<unknown, unknown>).requestSerialize;
    this.frames = Array.from({ length: grants }, (_, index) => {
      const message = serialize({ idp: 'bench', subject: `user-${index}` });
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      return frame;
    });
  }

  /** One GetGrant for a random user; resolves with the grpc-status (0 is OK) and its message. */
  call(): Promise<{ status: number; message: string }> {
    const session = this.sessions[this.next++ % this.sessions.length]!;
    const stream = session.request({
      ':method': 'POST',
      ':path': '/token_tap.v1.TokenVault/GetGrant',
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${this.apiKey}`,
    });
    return new Promise((resolve) => {
      let status: number | undefined;
      let message = '';
      const read = (headers: http2.IncomingHttpHeaders) => {
        if (headers['grpc-status'] !== undefined) status = Number(headers['grpc-status']);
        if (headers['grpc-message']) message = decodeURIComponent(String(headers['grpc-message']));
      };
      stream.on('response', read);
      stream.on('trailers', read);
      stream.on('data', () => undefined);
      stream.on('error', (error) => {
        message = error.message;
      });
      stream.on('close', () => resolve({ status: status ?? grpc.status.UNAVAILABLE, message }));
      stream.end(this.frames[Math.floor(Math.random() * this.frames.length)]);
    });
  }

  close(): void {
    for (const session of this.sessions) session.close();
  }
}

/** A GrpcLoad of `channels` connections once the API at `port` answers GetGrant OK. */
export async function answering(port: number, apiKey: string, channels: number, grants: number): Promise<GrpcLoad> {
  await waitFor(
    'the TokenVault API',
    async () => {
      const probe = new GrpcLoad(port, 1, apiKey, grants);
      try {
        return (await probe.call()).status === grpc.status.OK ? true : undefined;
      } finally {
        probe.close();
      }
    },
    20_000,
    100,
  );
  return new GrpcLoad(port, channels, apiKey, grants);
}

/** A GetGrant call as the open loop counts it: ok, or the gRPC status as the error. */
export function outcomeCall(load: GrpcLoad): () => Promise<Outcome> {
  return async () => {
    const { status, message } = await load.call();
    return status === 0 ? { ok: true } : { ok: false, error: `grpc_${status}`, message };
  };
}
