// Envoy's ext_proc gRPC service. Its messages come from the .proto files that ship in
// @grpc/grpc-js-xds (deps/); we do not vendor third-party protos. The build cuts the few messages
// and fields the sidecar uses out of them (pruned-descriptor.ts) into a small descriptor, and the
// codec is protobufjs's on that descriptor, in the object shapes @grpc/proto-loader gives (the
// whole descriptor through proto-loader cost ~6.5 MB RSS per thread; this costs ~0.3 MB).
// The message types are generated from the full protos at build time (scripts/generate-proto-types.js,
// into generated/ext-proc/, with LOADER_OPTIONS' flags; type-only imports).
// @grpc/grpc-js-xds is a build-time (dev) dependency: a built sidecar reads only the descriptor.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { HeaderValue__Output } from '../../generated/ext-proc/envoy/config/core/v3/HeaderValue.js';
import type { ProcessingRequest__Output } from '../../generated/ext-proc/envoy/service/ext_proc/v3/ProcessingRequest.js';
import type { ProcessingResponse as GeneratedProcessingResponse } from '../../generated/ext-proc/envoy/service/ext_proc/v3/ProcessingResponse.js';
import type { Value__Output } from '../../generated/ext-proc/google/protobuf/Value.js';
import { EXT_PROC_SERVICE, pruneExtProcDescriptor } from './pruned-descriptor.js';

const require = createRequire(import.meta.url);

function xdsDepsDir(): string {
  let packageJson: string;
  try {
    packageJson = require.resolve('@grpc/grpc-js-xds/package.json');
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'MODULE_NOT_FOUND') throw error;
    throw new Error(
      `the ext_proc descriptor ${EXT_PROC_DESCRIPTOR_FILE} is missing and Envoy's protos (@grpc/grpc-js-xds, a build-time dependency) are not installed: build with \`npm ci && npm run build\``,
      { cause: error },
    );
  }
  return path.join(path.dirname(packageJson), 'deps');
}

export const EXT_PROC_PROTO = 'envoy/service/ext_proc/v3/external_processor.proto';

export function envoyProtoIncludeDirs(): string[] {
  const deps = xdsDepsDir();
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((dir) => path.join(deps, dir));
}

// Field names stay snake_case, as in Envoy's documentation; bytes arrive as Buffers; the member of
// a oneof that is set is named (`request`, `response`); fields not on the wire are left out. The
// generated types follow these options (a unit test keeps scripts/generate-proto-types.js equal).
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
};

/** A header as decoded (bytes as Buffers): Envoy sets `raw_value` or `value`. */
export type HeaderValue = HeaderValue__Output;

/**
 * A google.protobuf.Value as protobufjs decodes it: the well-known types keep their camelCase names
 * whatever keepCase says; `string_value` is read too, should a descriptor ever name it so.
 */
export type ProtoValue = Value__Output & { string_value?: string };

/**
 * One message from Envoy on an ext_proc stream. The generated type has every field of the full
 * proto; the pruned descriptor decodes the few KEPT_FIELDS of pruned-descriptor.ts, the others stay
 * unset. `request` names the member of the oneof that is set.
 */
export interface ProcessingRequest extends Omit<ProcessingRequest__Output, 'attributes'> {
  /** `request_attributes`/`response_attributes` values, keyed by the filter's name, then by attribute. */
  attributes?: Record<string, { fields?: Record<string, ProtoValue> }>;
}

type Continue = { response: Record<string, never> };

/**
 * A reply to Envoy. The sidecar only ever sends empty CONTINUE replies, one of the same kind as the
 * message it answers; the generated ProcessingResponse allows any mix of every reply.
 */
export type ProcessingResponse = RepliesOnly<
  | { request_headers: Continue }
  | { response_headers: Continue }
  | { request_body: Continue }
  | { response_body: Continue }
  | { request_trailers: Record<string, never> }
  | { response_trailers: Record<string, never> }
>;

/** Checks, at compile time, that each reply is a ProcessingResponse of the generated type. */
type RepliesOnly<T extends GeneratedProcessingResponse> = T;

export type ExtProcStream = grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>;

export interface ExtProcDefinition {
  service: grpc.ServiceDefinition;
  /** A client constructor, used by tests and benchmarks to speak Envoy's side of the protocol. */
  Client: grpc.ServiceClientConstructor;
}

/** The pruned descriptor, written at build time by scripts/copy-assets.js; absent from a bare tsc build. */
export const EXT_PROC_DESCRIPTOR_FILE = fileURLToPath(new URL('./ext_proc.pruned.json', import.meta.url));

/** Parses the ext_proc protos (and what they import) into a protobufjs JSON descriptor. */
export function parseExtProcProtos(): protobuf.INamespace {
  // Envoy's option annotations import descriptor.proto, which protobufjs ships as JSON but does not
  // register (proto-loader registers it the same way when it loads).
  const descriptorProto = require('protobufjs/google/protobuf/descriptor.json') as { nested: { google: { nested: { protobuf: protobuf.INamespace } } } };
  protobuf.common('descriptor', descriptorProto.nested.google.nested.protobuf.nested!);
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

/** What the build writes: the parsed protos cut down to the messages the sidecar uses. */
export function prunedExtProcDescriptor(): protobuf.INamespace {
  return pruneExtProcDescriptor(parseExtProcProtos());
}

// As proto-loader's serializers: fromObject, then encode; toObject with LOADER_OPTIONS on decode.
function serializerFor(type: protobuf.Type): grpc.serialize<object> {
  return (value) => {
    if (Array.isArray(value)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    return type.encode(type.fromObject(value)).finish() as Buffer;
  };
}

function deserializerFor<T>(type: protobuf.Type): grpc.deserialize<T> {
  return (bytes) => type.toObject(type.decode(bytes), LOADER_OPTIONS) as T;
}

function serviceDefinition(descriptor: protobuf.INamespace): grpc.ServiceDefinition {
  const root = protobuf.Root.fromJSON(descriptor);
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of root.lookupService(EXT_PROC_SERVICE).methodsArray) {
    const requestType = root.lookupType(method.requestType);
    const responseType = root.lookupType(method.responseType);
    definition[method.name] = {
      path: `/${EXT_PROC_SERVICE}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: serializerFor(requestType),
      requestDeserialize: deserializerFor(requestType),
      responseSerialize: serializerFor(responseType),
      responseDeserialize: deserializerFor(responseType),
      // proto-loader's alias: clients get both `Process` and `process`.
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  return definition;
}

let cached: ExtProcDefinition | undefined;

export function loadExtProc(): ExtProcDefinition {
  if (cached) return cached;
  // Without the build step the protos are parsed and cut here, the same way, only slower.
  const descriptor = existsSync(EXT_PROC_DESCRIPTOR_FILE)
    ? (JSON.parse(readFileSync(EXT_PROC_DESCRIPTOR_FILE, 'utf8')) as protobuf.INamespace)
    : prunedExtProcDescriptor();
  const Client = grpc.makeGenericClientConstructor(serviceDefinition(descriptor), EXT_PROC_SERVICE.split('.').at(-1)!);
  cached = { service: Client.service, Client };
  return cached;
}
