// Envoy's ext_proc gRPC service, loaded at run time from the .proto files that ship in
// @grpc/grpc-js-xds (deps/). We do not vendor third-party protos.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);

function xdsDepsDir(): string {
  const packageJson = require.resolve('@grpc/grpc-js-xds/package.json');
  return path.join(path.dirname(packageJson), 'deps');
}

export const EXT_PROC_PROTO = 'envoy/service/ext_proc/v3/external_processor.proto';

export function envoyProtoIncludeDirs(): string[] {
  const deps = xdsDepsDir();
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((dir) => path.join(deps, dir));
}

// Field names stay snake_case, as in Envoy's documentation; bytes arrive as Buffers.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
};

export interface HeaderValue {
  key: string;
  value?: string;
  raw_value?: Buffer;
}

export interface HttpHeaders {
  headers?: { headers?: HeaderValue[] };
  end_of_stream?: boolean;
}

export interface HttpBody {
  body?: Buffer;
  end_of_stream?: boolean;
}

export interface HttpTrailers {
  trailers?: { headers?: HeaderValue[] };
}

/** A google.protobuf.Value as the loader gives it (well-known types keep their camelCase names). */
export interface ProtoValue {
  string_value?: string;
  stringValue?: string;
}

/** One message from Envoy on an ext_proc stream (a subset of ProcessingRequest). */
export interface ProcessingRequest {
  request?: 'request_headers' | 'response_headers' | 'request_body' | 'response_body' | 'request_trailers' | 'response_trailers';
  request_headers?: HttpHeaders;
  response_headers?: HttpHeaders;
  request_body?: HttpBody;
  response_body?: HttpBody;
  request_trailers?: HttpTrailers;
  response_trailers?: HttpTrailers;
  observability_mode?: boolean;
  /** `request_attributes`/`response_attributes` values, keyed by the filter's name, then by attribute. */
  attributes?: Record<string, { fields?: Record<string, ProtoValue> }>;
}

/** A reply to Envoy. The sidecar only ever sends empty CONTINUE replies. */
export type ProcessingResponse =
  | { request_headers: { response: Record<string, never> } }
  | { response_headers: { response: Record<string, never> } }
  | { request_body: { response: Record<string, never> } }
  | { response_body: { response: Record<string, never> } }
  | { request_trailers: Record<string, never> }
  | { response_trailers: Record<string, never> };

export type ExtProcStream = grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>;

export interface ExtProcDefinition {
  service: grpc.ServiceDefinition;
  /** A client constructor, used by tests and benchmarks to speak Envoy's side of the protocol. */
  Client: grpc.ServiceClientConstructor;
}

/** Written at build time by scripts/copy-assets.js; absent when running from a bare tsc build. */
export const EXT_PROC_DESCRIPTOR_FILE = fileURLToPath(new URL('./ext_proc.descriptor.json', import.meta.url));

/** Parses the ext_proc protos (and what they import) into a protobufjs JSON descriptor. */
export function parseExtProcProtos(): protobuf.INamespace {
  const includeDirs = envoyProtoIncludeDirs();
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(EXT_PROC_PROTO, { keepCase: true });
  return root.toJSON();
}

let cached: ExtProcDefinition | undefined;

export function loadExtProc(): ExtProcDefinition {
  if (cached) return cached;
  const packageDefinition = existsSync(EXT_PROC_DESCRIPTOR_FILE)
    ? protoLoader.fromJSON(JSON.parse(readFileSync(EXT_PROC_DESCRIPTOR_FILE, 'utf8')) as protobuf.INamespace, LOADER_OPTIONS)
    : protoLoader.loadSync(EXT_PROC_PROTO, { ...LOADER_OPTIONS, includeDirs: envoyProtoIncludeDirs() });
  const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
    envoy: { service: { ext_proc: { v3: { ExternalProcessor: grpc.ServiceClientConstructor } } } };
  };
  const Client = loaded.envoy.service.ext_proc.v3.ExternalProcessor;
  cached = { service: Client.service, Client };
  return cached;
}
