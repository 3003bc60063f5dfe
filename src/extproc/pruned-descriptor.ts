// The part of Envoy's ext_proc protocol the sidecar and its tests read or write, cut out of the
// full protos at build time. The whole import closure of external_processor.proto (hundreds of
// messages) cost ~6.5 MB RSS in each thread that loaded it; these few messages cost ~0.3 MB.
// Only names are listed here: every field number and type is copied from the parsed protos, so the
// cut is wire-compatible with Envoy, and the fields left out are skipped on decode like any other
// unknown field.
import protobuf from 'protobufjs';

export const EXT_PROC_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';

/** The six messages of an HTTP exchange: each kind of request, and the reply of the same name. */
const EXCHANGE_KINDS = ['request_headers', 'response_headers', 'request_body', 'response_body', 'request_trailers', 'response_trailers'];

/** Each message kept, with the fields kept; a oneof keeps the members listed here. */
export const KEPT_FIELDS: Readonly<Record<string, string[]>> = {
  'envoy.service.ext_proc.v3.ProcessingRequest': [...EXCHANGE_KINDS, 'attributes', 'observability_mode'],
  'envoy.service.ext_proc.v3.HttpHeaders': ['headers', 'end_of_stream'],
  'envoy.service.ext_proc.v3.HttpBody': ['body', 'end_of_stream'],
  'envoy.service.ext_proc.v3.HttpTrailers': ['trailers'],
  'envoy.config.core.v3.HeaderMap': ['headers'],
  'envoy.config.core.v3.HeaderValue': ['key', 'value', 'raw_value'],
  // The attributes' values; Struct is recursive through Value and ListValue. protobufjs names
  // these well-known types' fields in camelCase whatever keepCase says.
  'google.protobuf.Struct': ['fields'],
  'google.protobuf.Value': ['nullValue', 'numberValue', 'stringValue', 'boolValue', 'structValue', 'listValue'],
  'google.protobuf.ListValue': ['values'],
  // The six replies the sidecar sends, all empty CONTINUEs.
  'envoy.service.ext_proc.v3.ProcessingResponse': EXCHANGE_KINDS,
  'envoy.service.ext_proc.v3.HeadersResponse': ['response'],
  'envoy.service.ext_proc.v3.BodyResponse': ['response'],
  'envoy.service.ext_proc.v3.CommonResponse': [],
  'envoy.service.ext_proc.v3.TrailersResponse': [],
};

function parentName(fullName: string): string {
  return fullName.slice(0, fullName.lastIndexOf('.'));
}

function shortName(fullName: string): string {
  return fullName.slice(fullName.lastIndexOf('.') + 1);
}

/** `.a.b.C` → `a.b.C` */
function withoutLeadingDot(fullName: string): string {
  return fullName.replace(/^\./, '');
}

function prunedField(typeName: string, field: protobuf.Field, kept: ReadonlySet<string>): protobuf.IField & { keyType?: string } {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type && !kept.has(withoutLeadingDot(resolved.fullName))) {
    throw new Error(`${typeName}.${field.name} is kept but its type ${resolved.fullName} is not`);
  }
  // Absolute type names, so a reference resolves the same whatever is left around it.
  const json: protobuf.IField & { keyType?: string } = { type: resolved ? resolved.fullName : field.type, id: field.id };
  if (field instanceof protobuf.MapField) json.keyType = field.keyType;
  else if (field.repeated) json.rule = 'repeated';
  return json;
}

function prunedType(full: protobuf.Root, typeName: string, fieldNames: string[], kept: ReadonlySet<string>): protobuf.IType {
  const type = full.lookupType(typeName);
  const fields: Record<string, protobuf.IField> = {};
  for (const name of fieldNames) {
    const field = type.fields[name];
    if (!field) throw new Error(`${typeName} has no field ${name}`);
    fields[name] = prunedField(typeName, field, kept);
  }
  const oneofs: Record<string, protobuf.IOneOf> = {};
  for (const oneof of type.oneofsArray) {
    const members = oneof.oneof.filter((name) => name in fields);
    if (members.length > 0) oneofs[oneof.name] = { oneof: members };
  }
  return Object.keys(oneofs).length > 0 ? { fields, oneofs } : { fields };
}

/** Enums the kept fields use, whole (an enum is a few names). */
function keptEnums(full: protobuf.Root, keptFields: Readonly<Record<string, string[]>>): protobuf.Enum[] {
  const enums = new Map<string, protobuf.Enum>();
  for (const [typeName, fieldNames] of Object.entries(keptFields)) {
    const type = full.lookupType(typeName);
    for (const name of fieldNames) {
      const resolved = type.fields[name]?.resolvedType;
      if (resolved instanceof protobuf.Enum) enums.set(withoutLeadingDot(resolved.fullName), resolved);
    }
  }
  return [...enums.values()];
}

function namespaceFor(pruned: protobuf.Root, full: protobuf.Root, fullName: string): protobuf.Namespace {
  const parent = parentName(fullName);
  if (full.lookup(parent) instanceof protobuf.Type) throw new Error(`${fullName} is a nested message; keep top-level messages only`);
  return pruned.define(parent);
}

/**
 * Cuts the kept messages, fields and the ExternalProcessor service out of the full ext_proc
 * descriptor (parseExtProcProtos) into a protobufjs JSON descriptor of their own.
 */
export function pruneExtProcDescriptor(fullDescriptor: protobuf.INamespace, keptFields: Readonly<Record<string, string[]>> = KEPT_FIELDS): protobuf.INamespace {
  const full = protobuf.Root.fromJSON(fullDescriptor);
  full.resolveAll();
  const kept = new Set(Object.keys(keptFields));
  const pruned = new protobuf.Root();
  for (const [typeName, fieldNames] of Object.entries(keptFields)) {
    namespaceFor(pruned, full, typeName).add(protobuf.Type.fromJSON(shortName(typeName), prunedType(full, typeName, fieldNames, kept)));
  }
  for (const enumType of keptEnums(full, keptFields)) {
    const enumName = withoutLeadingDot(enumType.fullName);
    namespaceFor(pruned, full, enumName).add(new protobuf.Enum(enumType.name, { ...enumType.values }));
  }
  const service = full.lookupService(EXT_PROC_SERVICE);
  const methods: Record<string, Omit<protobuf.IMethod, 'comment'>> = {};
  for (const method of service.methodsArray) {
    const requestType = method.resolvedRequestType!.fullName;
    const responseType = method.resolvedResponseType!.fullName;
    if (!kept.has(withoutLeadingDot(requestType)) || !kept.has(withoutLeadingDot(responseType))) continue;
    methods[method.name] = { requestType, responseType, requestStream: Boolean(method.requestStream), responseStream: Boolean(method.responseStream) };
  }
  if (Object.keys(methods).length === 0) throw new Error(`${EXT_PROC_SERVICE} has no method on the kept messages`);
  pruned
    .define(parentName(EXT_PROC_SERVICE))
    .add(protobuf.Service.fromJSON(shortName(EXT_PROC_SERVICE), { methods: methods as Record<string, protobuf.IMethod> }));
  pruned.resolveAll();
  return pruned.toJSON();
}
