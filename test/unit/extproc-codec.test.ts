// The pruned ext_proc codec (pruned-descriptor.ts) against the full protos through proto-loader, as
// the sidecar loaded them before: every message kind is encoded by one and decoded by the other,
// so a wrong field number or type, or a lost field, fails here rather than in front of Envoy.
import { readFileSync } from 'node:fs';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { expect } from 'chai';
import {
  EXT_PROC_DESCRIPTOR_FILE,
  EXT_PROC_PROTO,
  envoyProtoIncludeDirs,
  loadExtProc,
  LOADER_OPTIONS,
  parseExtProcProtos,
  prunedExtProcDescriptor,
} from '../../src/extproc/protocol.js';
import { EXT_PROC_SERVICE, KEPT_FIELDS, pruneExtProcDescriptor } from '../../src/extproc/pruned-descriptor.js';

type Method = grpc.MethodDefinition<object, object>;

const REQUEST_KINDS = ['request_headers', 'response_headers', 'request_body', 'response_body', 'request_trailers', 'response_trailers'] as const;

const headerMap = {
  headers: [
    { key: ':status', raw_value: Buffer.from('200') },
    { key: 'content-type', value: 'application/json' },
    { key: 'x-both', value: 'text', raw_value: Buffer.from([0xff, 0x00, 0x41]) },
  ],
};

/** One message of each kind, with every field the pruned codec keeps set to a value that is not a default. */
function sampleRequest(kind: (typeof REQUEST_KINDS)[number]): Record<string, unknown> {
  const payload = kind.endsWith('_headers')
    ? { headers: headerMap, end_of_stream: true }
    : kind.endsWith('_body')
      ? { body: Buffer.from('{"access_token":"at"}'), end_of_stream: true }
      : { trailers: headerMap };
  return {
    [kind]: payload,
    observability_mode: true,
    attributes: {
      'envoy.filters.http.ext_proc': {
        fields: {
          'xds.route_name': { stringValue: 'httproute/token-tap/idps/rule/0' },
          number: { numberValue: 2.5 },
          flag: { boolValue: true },
          nothing: { nullValue: 'NULL_VALUE' },
          nested: { structValue: { fields: { inner: { stringValue: 'x' } } } },
          list: { listValue: { values: [{ stringValue: 'a' }, { numberValue: 1 }] } },
        },
      },
    },
  };
}

const REPLIES = [
  { request_headers: { response: {} } },
  { response_headers: { response: {} } },
  { request_body: { response: {} } },
  { response_body: { response: {} } },
  { request_trailers: {} },
  { response_trailers: {} },
];

describe('extproc pruned codec', function () {
  // proto-loader parses the whole import closure of external_processor.proto.
  this.timeout(20_000);
  let full: Method;
  let pruned: Method;

  before(() => {
    const definition = protoLoader.loadSync(EXT_PROC_PROTO, { ...LOADER_OPTIONS, includeDirs: envoyProtoIncludeDirs() });
    full = (definition[EXT_PROC_SERVICE] as unknown as Record<string, Method>).Process!;
    pruned = loadExtProc().service.Process as Method;
  });

  it('is the descriptor the build wrote, cut from the parsed protos', () => {
    expect(readFileSync(EXT_PROC_DESCRIPTOR_FILE, 'utf8')).to.equal(JSON.stringify(prunedExtProcDescriptor()));
  });

  it('defines the Process method as the full protos do', () => {
    expect(pruned.path).to.equal('/envoy.service.ext_proc.v3.ExternalProcessor/Process').and.equal(full.path);
    expect({ requestStream: pruned.requestStream, responseStream: pruned.responseStream, originalName: pruned.originalName }).to.deep.equal({
      requestStream: full.requestStream,
      responseStream: full.responseStream,
      originalName: full.originalName,
    });
    const { Client } = loadExtProc();
    expect(Client.prototype).to.have.property('Process').that.is.a('function');
    expect(Client.prototype).to.have.property('process').that.is.a('function');
  });

  for (const kind of REQUEST_KINDS) {
    it(`a ${kind} request: the same bytes and the same object both ways`, () => {
      const request = sampleRequest(kind);
      const fullBytes = full.requestSerialize(request);
      const prunedBytes = pruned.requestSerialize(request);
      expect(prunedBytes.equals(fullBytes), 'encodings differ').to.equal(true);
      const reference = full.requestDeserialize(fullBytes) as Record<string, unknown>;
      expect(pruned.requestDeserialize(fullBytes)).to.deep.equal(reference);
      expect(full.requestDeserialize(prunedBytes)).to.deep.equal(reference);
      // The reference itself carries the sample, in proto-loader's shape.
      expect(reference).to.include({ request: kind, observability_mode: true });
      expect(reference[kind]).to.deep.equal(request[kind]);
      const fields = (reference.attributes as Record<string, { fields: Record<string, Record<string, unknown>> }>)['envoy.filters.http.ext_proc']!.fields;
      expect(fields['xds.route_name']).to.deep.equal({ stringValue: 'httproute/token-tap/idps/rule/0', kind: 'stringValue' });
      expect(fields.list).to.deep.equal({
        listValue: {
          values: [
            { stringValue: 'a', kind: 'stringValue' },
            { numberValue: 1, kind: 'numberValue' },
          ],
        },
        kind: 'listValue',
      });
    });
  }

  it('skips the fields it leaves out, as any unknown field', () => {
    const request = {
      ...sampleRequest('response_headers'),
      metadata_context: { filter_metadata: { 'token-tap': { fields: { idp: { stringValue: 'acme' } } } } },
    };
    const bytes = full.requestSerialize(request);
    const reference = full.requestDeserialize(bytes) as Record<string, unknown>;
    expect(reference).to.have.property('metadata_context');
    const { metadata_context: _left, ...kept } = reference;
    expect(pruned.requestDeserialize(bytes)).to.deep.equal(kept);
  });

  for (const reply of REPLIES) {
    const kind = Object.keys(reply)[0]!;
    it(`a ${kind} reply: the same bytes and the same object both ways`, () => {
      const fullBytes = full.responseSerialize(reply);
      const prunedBytes = pruned.responseSerialize(reply);
      expect(prunedBytes.equals(fullBytes), 'encodings differ').to.equal(true);
      const reference = full.responseDeserialize(fullBytes);
      expect(reference).to.deep.equal({ ...reply, response: kind });
      expect(pruned.responseDeserialize(fullBytes)).to.deep.equal(reference);
      expect(full.responseDeserialize(prunedBytes)).to.deep.equal(reference);
    });
  }

  it('refuses to keep a field whose message is not kept', () => {
    const { 'envoy.config.core.v3.HeaderMap': _headerMap, ...withoutHeaderMap } = KEPT_FIELDS;
    expect(() => pruneExtProcDescriptor(parseExtProcProtos(), withoutHeaderMap)).to.throw(/HttpHeaders\.headers is kept but its type .*HeaderMap is not/);
  });
});
