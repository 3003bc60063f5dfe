// Which IdP a response belongs to when the route carries no x-token-tap-idp metadata: Envoy's
// response attributes (xds.route_name, xds.route_metadata) and TOKEN_TAP_ROUTE_IDPS.
import { expect } from 'chai';
import fc from 'fast-check';
import { filterMetadataFromText } from '../../src/capture/route-metadata.js';
import { parseRouteIdps, resolveRoute } from '../../src/config/route-idps.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';
import { Exchange } from '../../src/extproc/exchange.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';

// Exactly what Envoy 1.40 sent for a route Envoy Gateway style metadata (captured from the real binary).
const GATEWAY_METADATA =
  'filter_metadata { key: "envoy-gateway" value { fields { key: "resources" value { list_value { values { struct_value { fields { key: "kind" value { string_value: "HTTPRoute" } } fields { key: "name" value { string_value: "token-tap-idps" } } fields { key: "namespace" value { string_value: "token-tap" } } fields { key: "sectionName" value { string_value: "entra" } } } } } } } } } ';
const GATEWAY_ROUTE_NAME = 'httproute/token-tap/token-tap-idps/rule/0/match/0/tokens_example_com';

function parsed(text: string): RouteIdpsOrProblems {
  const problems: string[] = [];
  const map = parseRouteIdps(text, problems);
  return { map, problems };
}
type RouteIdpsOrProblems = { map: ReadonlyMap<string, string>; problems: string[] };

describe('route → IdP (response attributes, TOKEN_TAP_ROUTE_IDPS)', () => {
  it('reads route metadata in protobuf text format as Envoy sends it', () => {
    expect(filterMetadataFromText(GATEWAY_METADATA)).to.deep.equal({
      'envoy-gateway': { resources: [{ kind: 'HTTPRoute', name: 'token-tap-idps', namespace: 'token-tap', sectionName: 'entra' }] },
    });
    expect(
      filterMetadataFromText(
        'filter_metadata { key: "token-tap" value { fields { key: "idp" value { string_value: "g\\x6fogle" } } fields { key: "n" value { number_value: 2 } } } }',
      ),
    ).to.deep.equal({
      'token-tap': { idp: 'google', n: 2 },
    });
    expect(filterMetadataFromText('filter_metadata { key: "x" value { fields { key')).to.equal(undefined);
    expect(filterMetadataFromText('}}}')).to.equal(undefined);
  });

  it('never throws on arbitrary text (property)', () => {
    fc.assert(
      fc.property(
        fc.string({
          unit: fc.constantFrom('{', '}', '[', ']', ':', '"', '\\', ' ', 'a', 'filter_metadata', 'key', 'value', 'fields', '1', '<', '>', ','),
          maxLength: 200,
        }),
        (text) => {
          const result = filterMetadataFromText(text);
          expect(result === undefined || typeof result === 'object').to.equal(true);
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('parses ROUTE=IDP entries and reports every bad one at once', () => {
    const good = parsed(`httproute/token-tap/token-tap-idps/entra=entra, ${GATEWAY_ROUTE_NAME}=google\nidp_x_token=x`);
    expect(good.problems).to.deep.equal([]);
    expect([...good.map]).to.deep.equal([
      ['httproute/token-tap/token-tap-idps/entra', 'entra'],
      [GATEWAY_ROUTE_NAME, 'google'],
      ['idp_x_token', 'x'],
    ]);
    const bad = parsed('noequals,r1=Not_An_IdP,r2=a,r2=b');
    expect(bad.problems).to.have.length(3);
    expect(bad.problems[0]).to.contain('"noequals" must be ROUTE=IDP');
    expect(bad.problems[1]).to.contain('IdP name "Not_An_IdP"');
    expect(bad.problems[2]).to.contain('route "r2" is given twice');
  });

  it('the sidecar config refuses a bad TOKEN_TAP_ROUTE_IDPS along with the other problems', () => {
    const env = { DATABASE_URL: 'postgres://u@127.0.0.1:5432/db', TOKEN_TAP_KEYS: generateKeySpec('k1') };
    expect([...loadSidecarConfig({ ...env, TOKEN_TAP_ROUTE_IDPS: 'a=entra' }).routeIdps]).to.deep.equal([['a', 'entra']]);
    expect(() => loadSidecarConfig({ ...env, TOKEN_TAP_ROUTE_IDPS: 'a=ENTRA', TOKEN_TAP_MAX_BODY_BYTES: 'x' })).to.throw(
      ConfigError,
      /IdP name "ENTRA"[\s\S]*TOKEN_TAP_MAX_BODY_BYTES|TOKEN_TAP_MAX_BODY_BYTES[\s\S]*IdP name "ENTRA"/,
    );
  });

  it('one precedence: initial metadata, then route metadata naming the IdP, then the rule, then the route name', () => {
    const map = parsed(`httproute/token-tap/token-tap-idps/entra=entra ${GATEWAY_ROUTE_NAME}=by-name`).map;
    const all = { idp: 'from-metadata', routeName: GATEWAY_ROUTE_NAME, routeMetadata: GATEWAY_METADATA };
    expect(resolveRoute(all, map)).to.include({ idp: 'from-metadata', source: 'grpc_metadata' });
    expect(resolveRoute({ ...all, idp: undefined }, map)).to.include({ idp: 'entra', source: 'route_rule' });
    expect(resolveRoute({ ...all, idp: undefined, routeMetadata: undefined }, map)).to.include({ idp: 'by-name', source: 'route_name' });
    const direct = 'filter_metadata { key: "token-tap" value { fields { key: "idp" value { string_value: "google" } } } } ' + GATEWAY_METADATA;
    expect(resolveRoute({ ...all, idp: undefined, routeMetadata: direct }, map)).to.include({ idp: 'google', source: 'route_metadata_idp' });
    // An initial-metadata value that is no IdP name names nothing; the attributes decide.
    expect(resolveRoute({ ...all, idp: 'Bad Name' }, map)).to.include({ idp: 'entra', source: 'route_rule' });
  });

  it('an unmatched route names no IdP, and says what it was looked up by', () => {
    const resolved = resolveRoute({ idp: undefined, routeName: 'httproute/other/r/rule/0/match/0/x', routeMetadata: GATEWAY_METADATA }, new Map());
    expect(resolved).to.deep.equal({
      idp: undefined,
      source: undefined,
      keys: ['httproute/token-tap/token-tap-idps/entra', 'httproute/other/r/rule/0/match/0/x'],
    });
    expect(resolveRoute({ idp: undefined }, new Map()).idp).to.equal(undefined);
  });

  it('the Exchange keeps the route attributes that come with the response headers', () => {
    const exchange = new Exchange({ idp: undefined, kind: 'token', subjectField: undefined }, { maxBodyBytes: 64 });
    exchange.accept({
      request: 'response_headers',
      // The loader gives google.protobuf.Value camelCase names; snake_case is read too.
      attributes: {
        'envoy.filters.http.ext_proc': {
          fields: { 'xds.route_name': { stringValue: GATEWAY_ROUTE_NAME }, 'xds.route_metadata': { string_value: GATEWAY_METADATA } },
        },
      },
      response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] }, end_of_stream: false },
    });
    exchange.accept({ request: 'response_body', response_body: { body: Buffer.from('{}'), end_of_stream: true } });
    const observed = exchange.finish()!;
    expect(observed).to.include({ idp: undefined, routeName: GATEWAY_ROUTE_NAME, routeMetadata: GATEWAY_METADATA, status: 200 });
    const without = new Exchange({ idp: 'demo', kind: 'token', subjectField: undefined }, { maxBodyBytes: 64 });
    without.accept({
      request: 'response_headers',
      response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] }, end_of_stream: true },
    });
    expect(without.finish()).to.not.have.any.keys('routeName', 'routeMetadata');
  });
});
