// Envoy's side of the ext_proc protocol, for tests and benchmarks that talk to the sidecar directly.
import * as grpc from '@grpc/grpc-js';
import { loadExtProc, type ProcessingRequest, type ProcessingResponse } from '../../src/extproc/protocol.js';
import { IDP_METADATA_KEY } from '../../src/contract.js';

export type ExtProcCall = grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse>;
export type ExtProcClient = grpc.Client & { Process(metadata: grpc.Metadata): ExtProcCall };

export function connectExtProc(address: string): ExtProcClient {
  const { Client } = loadExtProc();
  return new Client(address, grpc.credentials.createInsecure()) as unknown as ExtProcClient;
}

export function openStream(client: ExtProcClient, idp: string | undefined): ExtProcCall {
  const metadata = new grpc.Metadata();
  if (idp) metadata.set(IDP_METADATA_KEY, idp);
  const call = client.Process(metadata);
  call.on('error', () => undefined);
  return call;
}

/** An upstream response as Envoy would show it to the sidecar. */
export interface UpstreamResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  /** Envoy gives up before the end: no end_of_stream, and the stream is cancelled. */
  cutShort?: boolean;
}

/**
 * Plays Envoy's side of one buffered-mode stream on `client`'s connection: the response headers,
 * then the body in chunks, the last with end_of_stream. Cut short, it sends no end_of_stream and
 * cancels the stream once every message was answered (so all of them reached the sidecar).
 * Resolves when the stream is over.
 */
export async function sendResponse(client: ExtProcClient, idp: string, response: UpstreamResponse, chunkBytes = 64 * 1024): Promise<void> {
  const messages: ProcessingRequest[] = [];
  const headers = [[':status', String(response.status)], ...response.headers].map(([key, value]) => ({ key: key!, raw_value: Buffer.from(value!, 'latin1') }));
  const last = !response.cutShort;
  messages.push({ response_headers: { headers: { headers }, end_of_stream: last && response.body.length === 0 } });
  for (let offset = 0; offset < response.body.length; offset += chunkBytes) {
    const end = Math.min(offset + chunkBytes, response.body.length);
    messages.push({ response_body: { body: response.body.subarray(offset, end), end_of_stream: last && end === response.body.length } });
  }
  const call = openStream(client, idp);
  let replies = 0;
  await new Promise<void>((resolve) => {
    call.on('status', () => resolve());
    call.on('data', () => {
      replies += 1;
      if (response.cutShort && replies === messages.length) call.cancel();
    });
    for (const message of messages) call.write(message);
    if (!response.cutShort) call.end();
  });
}
