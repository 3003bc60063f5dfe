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
