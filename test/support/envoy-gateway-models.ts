// Typed models of the Envoy Gateway resources we render, written from its v1.9 API reference
// (api/v1alpha1 backend_types.go, envoyextensionypolicy_types.go, ext_proc_types.go,
// backendtrafficpolicy_types.go, ratelimit_types.go): field names,
// enums and required fields, no unknown fields. kubernetes-models has no Envoy Gateway package, so
// these JSON schemas stand in for its CRDs. Only the parts we use are modelled; a field outside
// them is refused, so a typo fails here instead of at `kubectl apply`.
import { Ajv, type ValidateFunction } from 'ajv';

const name = { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', maxLength: 253 };
const duration = { type: 'string', pattern: '^([0-9]{1,5}(h|m|s|ms)){1,4}$' }; // gwapiv1.Duration
const port = { type: 'integer', minimum: 1, maximum: 65535 };
const metadata = {
  type: 'object',
  required: ['name'],
  properties: { name, namespace: name, labels: { type: 'object', additionalProperties: { type: 'string' } } },
  additionalProperties: false,
};
const strict = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', properties, required, additionalProperties: false });

const backendRef = strict({ group: { type: 'string' }, kind: { type: 'string' }, name, namespace: name, port }, ['name']);

/** gateway.envoyproxy.io/v1alpha1 Backend (endpoints: fqdn | ip | unix; tls needs enableBackend in Envoy Gateway's config). */
export const BACKEND_SCHEMA = strict(
  {
    apiVersion: { const: 'gateway.envoyproxy.io/v1alpha1' },
    kind: { const: 'Backend' },
    metadata,
    spec: strict(
      {
        type: { enum: ['Endpoints', 'DynamicResolver'] },
        appProtocols: { type: 'array', items: { enum: ['gateway.envoyproxy.io/h2c', 'gateway.envoyproxy.io/ws', 'gateway.envoyproxy.io/wss'] } },
        endpoints: {
          type: 'array',
          minItems: 1,
          maxItems: 64,
          items: {
            type: 'object',
            minProperties: 1,
            maxProperties: 2,
            properties: {
              fqdn: strict(
                { hostname: { type: 'string', pattern: '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$', maxLength: 253 }, port },
                ['hostname', 'port'],
              ),
              ip: strict({ address: { type: 'string' }, port }, ['address', 'port']),
              unix: strict({ path: { type: 'string' } }, ['path']),
              zone: { type: 'string' },
            },
            additionalProperties: false,
          },
        },
        tls: strict({
          sni: { type: 'string', minLength: 1, maxLength: 253 },
          wellKnownCACertificates: { enum: ['System'] },
          caCertificateRefs: { type: 'array', maxItems: 8 },
          insecureSkipVerify: { type: 'boolean' },
        }),
      },
      [],
    ),
  },
  ['apiVersion', 'kind', 'metadata', 'spec'],
);

const extProc = strict(
  {
    backendRefs: { type: 'array', minItems: 1, maxItems: 16, items: backendRef },
    messageTimeout: duration,
    failOpen: { type: 'boolean' },
    // Envoy's observability_mode (v1.9+); only with a Streamed body (or none).
    shadowMode: { type: 'boolean' },
    processingMode: strict({
      allowModeOverride: { type: 'boolean' },
      request: strict({
        body: { enum: ['Streamed', 'Buffered', 'BufferedPartial', 'FullDuplexStreamed'] },
        attributes: { type: 'array', items: { type: 'string' } },
      }),
      response: strict({
        body: { enum: ['Streamed', 'Buffered', 'BufferedPartial', 'FullDuplexStreamed'] },
        attributes: { type: 'array', items: { type: 'string' } },
      }),
    }),
    metadata: strict({ accessibleNamespaces: { type: 'array', items: { type: 'string' } }, writableNamespaces: { type: 'array', items: { type: 'string' } } }),
  },
  ['backendRefs'],
);

/** gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy (targetRefs with sectionName; extProc at most 16). */
export const ENVOY_EXTENSION_POLICY_SCHEMA = strict(
  {
    apiVersion: { const: 'gateway.envoyproxy.io/v1alpha1' },
    kind: { const: 'EnvoyExtensionPolicy' },
    metadata,
    spec: strict(
      {
        targetRefs: {
          type: 'array',
          minItems: 1,
          items: strict(
            {
              group: { enum: ['gateway.networking.k8s.io'] },
              kind: { enum: ['Gateway', 'HTTPRoute', 'GRPCRoute', 'TCPRoute', 'UDPRoute', 'TLSRoute'] },
              name,
              sectionName: name,
            },
            ['group', 'kind', 'name'],
          ),
        },
        extProc: { type: 'array', maxItems: 16, items: extProc },
      },
      ['targetRefs'],
    ),
  },
  ['apiVersion', 'kind', 'metadata', 'spec'],
);

// RateLimitSelectCondition: at least one condition (the CRD's CEL rule); of them we render sourceCIDR
// only (headers, methods, path and queryParams exist too, as do a rule's cost, shared, shadowMode and
// xRateLimitHeaders).
const clientSelector = {
  ...strict({
    sourceCIDR: strict({ type: { enum: ['Exact', 'Distinct'] }, value: { type: 'string', minLength: 1, maxLength: 256 }, invert: { type: 'boolean' } }, [
      'value',
    ]),
  }),
  minProperties: 1,
};

const rateLimitRule = strict(
  {
    clientSelectors: { type: 'array', maxItems: 8, items: clientSelector },
    limit: strict({ requests: { type: 'integer', minimum: 0 }, unit: { enum: ['Second', 'Minute', 'Hour', 'Day', 'Month', 'Year'] } }, ['requests', 'unit']),
  },
  ['limit'],
);

/** gateway.envoyproxy.io/v1alpha1 BackendTrafficPolicy, its local rate limit only (targetRefs with sectionName; rules at most 16). */
export const BACKEND_TRAFFIC_POLICY_SCHEMA = strict(
  {
    apiVersion: { const: 'gateway.envoyproxy.io/v1alpha1' },
    kind: { const: 'BackendTrafficPolicy' },
    metadata,
    spec: strict(
      {
        targetRefs: {
          type: 'array',
          minItems: 1,
          items: strict(
            {
              group: { enum: ['gateway.networking.k8s.io'] },
              kind: { enum: ['Gateway', 'HTTPRoute', 'GRPCRoute', 'TCPRoute', 'UDPRoute', 'TLSRoute'] },
              name,
              sectionName: name,
            },
            ['group', 'kind', 'name'],
          ),
        },
        rateLimit: strict({
          type: { enum: ['Global', 'Local'] },
          local: strict({ rules: { type: 'array', maxItems: 16, items: rateLimitRule } }),
        }),
      },
      ['targetRefs'],
    ),
  },
  ['apiVersion', 'kind', 'metadata', 'spec'],
);

export type EnvoyGatewayKind = 'Backend' | 'EnvoyExtensionPolicy' | 'BackendTrafficPolicy';

let validators: Record<EnvoyGatewayKind, ValidateFunction> | undefined;

/** The validator for an Envoy Gateway kind we model. */
export function envoyGatewayValidator(kind: EnvoyGatewayKind): ValidateFunction {
  validators ??= (() => {
    const ajv = new Ajv({ allErrors: true, strict: true });
    return {
      Backend: ajv.compile(BACKEND_SCHEMA),
      EnvoyExtensionPolicy: ajv.compile(ENVOY_EXTENSION_POLICY_SCHEMA),
      BackendTrafficPolicy: ajv.compile(BACKEND_TRAFFIC_POLICY_SCHEMA),
    };
  })();
  return validators[kind];
}
