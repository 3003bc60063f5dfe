// Static checks of deploy/envoy-gateway/ and deploy/istio/ (no cluster runs here): they are what
// `token-tap envoy-gateway` renders; every object passes its schema (kubernetes-models for core
// kinds, @kubernetes-models/gateway-api for HTTPRoute, @kubernetes-models/istio for Istio's, our
// models of Envoy Gateway's v1.9 API for Backend, EnvoyExtensionPolicy and BackendTrafficPolicy); versions agree; and the
// Envoy config inside (the EnvoyFilter's filter and per-route patches) passes `envoy --mode validate`.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parseAllDocuments, stringify } from 'yaml';
import { gatewayExampleFiles } from '../../scripts/render-gateway-examples.js';
import { renderGatewayCommand } from '../../src/envoyconfig/gateway-cli.js';
import { envoyGatewayValidator, type EnvoyGatewayKind } from '../support/envoy-gateway-models.js';
import { validateEnvoyConfig } from '../support/envoy.js';
import { expectExchangeExposed } from '../support/exchange-exposure.js';
import { envoyGatewayShapedBootstrap } from '../support/envoy-gateway-shape.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8');
type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; spec: any };
const objectsOf = (file: string) => parseAllDocuments(read(file)).map((doc) => doc.toJSON() as K8sObject);

async function validate(object: K8sObject): Promise<void> {
  if (object.apiVersion.startsWith('gateway.envoyproxy.io/')) {
    const check = envoyGatewayValidator(object.kind as EnvoyGatewayKind);
    if (!check) throw new Error(`no model for ${object.apiVersion} ${object.kind}`);
    if (!check(object as unknown)) throw new Error(`${object.kind} ${object.metadata.name}: ${JSON.stringify(check.errors)}`);
    return;
  }
  const [group = '', version] = object.apiVersion.includes('/') ? object.apiVersion.split('/') : ['', object.apiVersion];
  const modulePath = group.startsWith('gateway.networking.k8s.io')
    ? `@kubernetes-models/gateway-api/${group}/${version}`
    : group.endsWith('istio.io')
      ? `@kubernetes-models/istio/${group}/${version}`
      : group
        ? `kubernetes-models/${group}/${version}`
        : `kubernetes-models/${version}`;
  const models = (await import(modulePath)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = models[object.kind];
  if (!Model) throw new Error(`no model for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate();
}

async function refused(object: K8sObject): Promise<boolean> {
  try {
    await validate(object);
    return false;
  } catch {
    return true;
  }
}

describe('Envoy Gateway and Istio manifests (static checks)', function () {
  this.timeout(60_000);
  const packageJson = JSON.parse(read('package.json')) as { version: string; devDependencies: Record<string, string> };

  for (const [file, content] of Object.entries(gatewayExampleFiles())) {
    it(`${file} is what token-tap envoy-gateway renders (regenerate: node dist/scripts/render-gateway-examples.js)`, () => {
      expect(read(file)).to.equal(content);
    });

    it(`every object of ${file} passes its schema`, async () => {
      const objects = objectsOf(file);
      for (const object of objects) await validate(object);
      expect(objects.map((object) => object.kind)).to.include.members(['StatefulSet', 'Service', 'NetworkPolicy']);
    });
  }

  it('the checks can fail: a wrong enum, an unknown field, a missing required field', async () => {
    const objects = objectsOf('deploy/envoy-gateway/token-tap.yaml');
    const policy = objects.find((object) => object.kind === 'EnvoyExtensionPolicy')!;
    const badBody = structuredClone(policy);
    badBody.spec.extProc[0].processingMode.response.body = 'Stream';
    expect(await refused(badBody)).to.equal(true);
    const typo = structuredClone(policy);
    typo.spec.extProc[0].failopen = true;
    expect(await refused(typo)).to.equal(true);
    const limit = structuredClone(objects.find((object) => object.kind === 'BackendTrafficPolicy')!);
    limit.spec.rateLimit.local.rules[0].limit.unit = 'Seconds';
    expect(await refused(limit)).to.equal(true);
    const perAddress = structuredClone(objects.find((object) => object.kind === 'BackendTrafficPolicy')!);
    perAddress.spec.rateLimit.local.rules[0].clientSelectors[0].sourceCIDR.type = 'PerAddress';
    expect(await refused(perAddress)).to.equal(true);
    const noCondition = structuredClone(objects.find((object) => object.kind === 'BackendTrafficPolicy')!);
    noCondition.spec.rateLimit.local.rules[0].clientSelectors = [{}];
    expect(await refused(noCondition)).to.equal(true);
    const backend = structuredClone(objects.find((object) => object.kind === 'Backend')!);
    delete backend.spec.endpoints[0].fqdn.port;
    expect(await refused(backend)).to.equal(true);
    const route = structuredClone(objects.find((object) => object.kind === 'HTTPRoute')!);
    route.spec.rules[0].matches[0].path.type = 'Equals';
    expect(await refused(route)).to.equal(true);
    const filter = structuredClone(objectsOf('deploy/istio/token-tap.yaml').find((object) => object.kind === 'EnvoyFilter')!);
    filter.spec.configPatches[0].applyTo = 'HTTP_FILTERS';
    expect(await refused(filter)).to.equal(true);
    const backendTls = objects.find((object) => object.kind === 'BackendTLSPolicy')!;
    const noHostname = structuredClone(backendTls);
    delete noHostname.spec.validation.hostname;
    expect(await refused(noHostname)).to.equal(true);
    const noTargets = structuredClone(backendTls);
    delete noTargets.spec.targetRefs;
    expect(await refused(noTargets)).to.equal(true);
  });

  it('Envoy Gateway: a BackendTLSPolicy makes the gateway dial ext_proc over TLS and check the sidecar certificate; the sidecar demands a client certificate', () => {
    for (const file of ['deploy/envoy-gateway/token-tap.yaml', 'deploy/envoy-gateway/token-tap.buffered.yaml']) {
      const objects = objectsOf(file);
      const policy = objects.find((object) => object.kind === 'EnvoyExtensionPolicy')!;
      const extProcRef = policy.spec.extProc[0].backendRefs[0];
      const service = objects.find((object) => object.kind === 'Service' && object.metadata.name === extProcRef.name)!;
      const backendTls = objects.find((object) => object.kind === 'BackendTLSPolicy')!;
      expect(backendTls.apiVersion).to.equal('gateway.networking.k8s.io/v1alpha3');
      expect(backendTls.metadata.namespace, 'same namespace as the Service').to.equal(service.metadata.namespace);
      expect(backendTls.spec.targetRefs).to.deep.equal([{ group: '', kind: 'Service', name: service.metadata.name, sectionName: service.spec.ports[0].name }]);
      expect(backendTls.spec.validation).to.deep.equal({
        caCertificateRefs: [{ group: '', kind: 'ConfigMap', name: 'token-tap-extproc-ca' }],
        hostname: `${service.metadata.name}.${service.metadata.namespace}.svc.cluster.local`,
      });
      // No cleartext-h2 appProtocol on a TLS port.
      expect(service.spec.ports[0].appProtocol).to.equal(undefined);
      // How the gateway gets its client certificate is said where operators read it.
      expect(read(file)).to.contain('spec.backendTLS.clientCertificateRef');
    }
  });

  it('Istio: the gateway originates mTLS to ext_proc (DestinationRule MUTUAL), and the per-route patches match virtual host and route name both', () => {
    const objects = objectsOf('deploy/istio/token-tap.yaml');
    const rule = objects.find((object) => object.kind === 'DestinationRule' && object.metadata.name === 'token-tap-extproc')!;
    expect(rule.spec.host).to.equal('token-tap-extproc.token-tap.svc.cluster.local');
    expect(rule.spec.trafficPolicy.tls).to.include({ mode: 'MUTUAL', credentialName: 'token-tap-extproc-client', sni: rule.spec.host });
    const filter = objects.find((object) => object.kind === 'EnvoyFilter')!;
    const filterPatch = filter.spec.configPatches[0];
    expect(filterPatch.patch.value.typed_config.grpc_service.envoy_grpc.cluster_name).to.equal(`outbound|50051||${rule.spec.host}`);
    const virtualService = objects.find((object) => object.kind === 'VirtualService')!;
    const extProcPatch = (patch: any) => patch.applyTo === 'HTTP_ROUTE' && 'envoy.filters.http.ext_proc' in patch.patch.value.typed_per_filter_config;
    const routePatches = filter.spec.configPatches.filter(extProcPatch);
    const routeNames = virtualService.spec.http.map((route: { name: string }) => route.name).filter((name: string) => name !== 'okta-token-hook');
    expect(routePatches.map((patch: any) => patch.match.routeConfiguration)).to.deep.equal(
      routeNames.flatMap((name: string) => virtualService.spec.hosts.map((host: string) => ({ vhost: { name: `${host}:443`, route: { name } } }))),
    );
    // Several hostnames: one patch per IdP and host, each naming its virtual host.
    const two = renderGatewayCommand(
      {
        idp: ['a=https://a.example/t'],
        mode: 'observability',
        namespace: 'token-tap',
        gateway: 'istio-system/gw',
        hostname: ['x.example', 'y.example'],
        istio: true,
      },
      Error,
    );
    const twoFilter = parseAllDocuments(two)
      .map((doc) => doc.toJSON() as K8sObject)
      .find((object) => object.kind === 'EnvoyFilter')!;
    expect(twoFilter.spec.configPatches.filter(extProcPatch).map((patch: any) => patch.match.routeConfiguration.vhost.name)).to.deep.equal([
      'x.example:443',
      'y.example:443',
    ]);
  });

  it('the Okta hook rule is rate limited by default, per client address, and only it (Envoy Gateway: a BackendTrafficPolicy; Istio: buckets on the hook route of each host)', () => {
    for (const file of ['deploy/envoy-gateway/token-tap.yaml', 'deploy/envoy-gateway/token-tap.buffered.yaml']) {
      const objects = objectsOf(file);
      const route = objects.find((object) => object.kind === 'HTTPRoute')!;
      const policy = objects.find((object) => object.kind === 'BackendTrafficPolicy')!;
      expect(policy.spec.targetRefs).to.deep.equal([
        { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: route.metadata.name, sectionName: 'okta-token-hook' },
      ]);
      expect(route.spec.rules.map((rule: { name: string }) => rule.name)).to.include('okta-token-hook');
      // A bucket per address (Distinct) over all of IPv4 and all of IPv6; no rule without
      // clientSelectors, which would be one bucket shared by every caller.
      const perClient = (value: string) => ({ clientSelectors: [{ sourceCIDR: { type: 'Distinct', value } }], limit: { requests: 100, unit: 'Second' } });
      expect(policy.spec.rateLimit).to.deep.equal({ type: 'Local', local: { rules: [perClient('0.0.0.0/0'), perClient('::/0')] } });
    }
    const filter = objectsOf('deploy/istio/token-tap.yaml').find((object) => object.kind === 'EnvoyFilter')!;
    const limited = filter.spec.configPatches.filter(
      (patch: any) => patch.applyTo === 'HTTP_ROUTE' && 'envoy.filters.http.local_ratelimit' in patch.patch.value.typed_per_filter_config,
    );
    expect(limited.map((patch: any) => patch.match.routeConfiguration.vhost)).to.deep.equal([
      { name: 'tokens.example.com:443', route: { name: 'okta-token-hook' } },
    ]);
    // The same buckets as envoy-config: the route's remote_address action and a wildcard descriptor.
    expect(limited[0].patch.value.route).to.deep.equal({ rate_limits: [{ actions: [{ remote_address: {} }] }] });
    const buckets = limited[0].patch.value.typed_per_filter_config['envoy.filters.http.local_ratelimit'];
    expect(buckets.descriptors).to.deep.equal([
      { entries: [{ key: 'remote_address' }], token_bucket: { max_tokens: 200, tokens_per_fill: 100, fill_interval: '1s' } },
    ]);
    expect(buckets).to.include({ always_consume_default_token_bucket: false, max_dynamic_descriptors: 10_000 });
    const filters = filter.spec.configPatches.filter((patch: any) => patch.applyTo === 'HTTP_FILTER').map((patch: any) => patch.patch.value.name);
    expect(filters).to.deep.equal(['envoy.filters.http.ext_proc', 'envoy.filters.http.local_ratelimit']);
    // --okta-hook-rate-limit: another rate, or none.
    const render = (flags: Record<string, unknown>) =>
      parseAllDocuments(
        renderGatewayCommand(
          { idp: ['a=https://a.example/t'], mode: 'observability', namespace: 'token-tap', gateway: 'eg', hostname: ['h.example'], istio: false, ...flags },
          Error,
        ),
      ).map((doc) => doc.toJSON() as K8sObject);
    expect(
      render({ oktaHookRateLimit: '600/m' })
        .find((object) => object.kind === 'BackendTrafficPolicy')!
        .spec.rateLimit.local.rules.map((rule: any) => rule.limit),
    ).to.deep.equal([
      { requests: 600, unit: 'Minute' },
      { requests: 600, unit: 'Minute' },
    ]);
    expect(render({ oktaHookRateLimit: 'off' }).map((object) => object.kind)).to.not.include('BackendTrafficPolicy');
    const istioOff = render({ oktaHookRateLimit: 'off', istio: true }).find((object) => object.kind === 'EnvoyFilter')!;
    expect(JSON.stringify(istioOff)).to.not.contain('local_ratelimit');
    expect(() => render({ oktaHookRateLimit: 'fast' })).to.throw(/--okta-hook-rate-limit must be/);
  });

  it('the sidecar: ext_proc and the TokenVault API over TLS from Secrets, the spool on a ReadWriteOncePod claim per pod, API callers from one named namespace', () => {
    for (const file of Object.keys(gatewayExampleFiles())) {
      const objects = objectsOf(file);
      const statefulSet = objects.find((object) => object.kind === 'StatefulSet')!;
      expect(
        objects.some((object) => object.kind === 'Deployment'),
        `${file}: no Deployment (its spool would die with the pod)`,
      ).to.equal(false);
      const pod = statefulSet.spec.template.spec;
      const container = pod.containers[0];
      const env = Object.fromEntries((container.env as Array<{ name: string; value?: string }>).map((entry) => [entry.name, entry.value]));
      const mountOf = (file: string) => container.volumeMounts.find((mount: { mountPath: string }) => file.startsWith(`${mount.mountPath}/`));
      const secretOf = (file: string) => pod.volumes.find((volume: { name: string }) => volume.name === mountOf(file)?.name)?.secret?.secretName;
      for (const name of ['TOKEN_TAP_EXTPROC_TLS_CERT', 'TOKEN_TAP_EXTPROC_TLS_KEY', 'TOKEN_TAP_EXTPROC_TLS_CLIENT_CA'])
        expect(secretOf(env[name]!), `${file} ${name}`).to.equal('token-tap-extproc-tls');
      expect(env.TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS, 'no opt-out of mTLS in what we ship').to.equal(undefined);
      expect(env.TOKEN_TAP_API_LISTEN).to.equal('0.0.0.0:50052');
      for (const name of ['TOKEN_TAP_API_TLS_CERT', 'TOKEN_TAP_API_TLS_KEY']) expect(secretOf(env[name]!), `${file} ${name}`).to.equal('token-tap-api-tls');
      expect(env.TOKEN_TAP_ALLOW_INSECURE_API).to.equal(undefined);
      // The spool outlives the pod: a claim per pod, one pod at a time.
      expect(
        pod.volumes.find((volume: { name: string }) => volume.name === 'spool'),
        'no pod-lived spool volume',
      ).to.equal(undefined);
      const claim = statefulSet.spec.volumeClaimTemplates.find((template: { metadata: { name: string } }) => template.metadata.name === 'spool');
      expect(claim.spec.accessModes).to.deep.equal(['ReadWriteOncePod']);
      expect(container.volumeMounts.find((mount: { name: string }) => mount.name === 'spool').mountPath).to.equal(env.TOKEN_TAP_SPOOL_DIR);
      expect(statefulSet.spec.persistentVolumeClaimRetentionPolicy).to.deep.equal({ whenDeleted: 'Retain', whenScaled: 'Retain' });
      const governing = objects.find((object) => object.kind === 'Service' && object.metadata.name === statefulSet.spec.serviceName)!;
      expect(governing.spec.clusterIP, 'governing headless Service').to.equal('None');
      // API callers: a namespace named by Kubernetes' own label, not one any namespace owner can set.
      const policy = objects.find((object) => object.kind === 'NetworkPolicy')!;
      const apiRule = policy.spec.ingress.find((rule: { ports: Array<{ port: number }> }) => rule.ports.some((p) => p.port === 50052));
      for (const peer of apiRule.from) expect(Object.keys(peer.namespaceSelector.matchLabels ?? {}), file).to.deep.equal(['kubernetes.io/metadata.name']);
    }
  });

  it('the token exchange is off in the shipped manifests (nothing of it: no env, port, Secret or ConfigMap the pods would need)', () => {
    for (const file of Object.keys(gatewayExampleFiles())) {
      expect(JSON.stringify(objectsOf(file)), file).to.not.match(/TOKEN_TAP_EXCHANGE|token-tap-exchange|8444/);
      expect(read(file), file).to.contain('The token exchange is off (--token-exchange renders it');
    }
  });

  it('--token-exchange: over TLS from its Secret, its file from a ConfigMap, a Service port, callers from one named namespace; the notes name both', () => {
    for (const istio of [false, true]) {
      const yaml = renderGatewayCommand(
        {
          idp: ['entra=https://login.example/t'],
          mode: 'observability',
          namespace: 'token-tap',
          gateway: istio ? 'istio-system/gw' : 'eg',
          hostname: ['h.example'],
          istio,
          tokenExchange: true,
        },
        Error,
      );
      const where = istio ? 'istio --token-exchange' : 'envoy-gateway --token-exchange';
      expect(
        expectExchangeExposed(
          parseAllDocuments(yaml).map((doc) => doc.toJSON() as K8sObject),
          where,
        ),
      ).to.equal('exchange.yaml');
      expect(yaml, where)
        .to.contain('--token-exchange')
        .and.contain('Secret token-tap-exchange-tls in token-tap')
        .and.contain('ConfigMap token-tap-exchange in token-tap: exchange.yaml');
    }
  });

  it('the policy: ext_proc only on the IdP rules, fail open, response attributes, shadow mode with Streamed (buffered: Buffered, no shadow)', () => {
    for (const [file, shadow] of [
      ['deploy/envoy-gateway/token-tap.yaml', true],
      ['deploy/envoy-gateway/token-tap.buffered.yaml', false],
    ] as const) {
      const objects = objectsOf(file);
      const policy = objects.find((object) => object.kind === 'EnvoyExtensionPolicy')!;
      const route = objects.find((object) => object.kind === 'HTTPRoute')!;
      const idpRules = route.spec.rules
        .filter((rule: { backendRefs: Array<{ kind: string }> }) => rule.backendRefs[0]!.kind === 'Backend')
        .map((rule: { name: string }) => rule.name);
      expect(idpRules).to.deep.equal(['entra', 'google']);
      expect(policy.spec.targetRefs.map((ref: { sectionName: string }) => ref.sectionName)).to.deep.equal(idpRules);
      const extProc = policy.spec.extProc[0];
      expect(extProc).to.include({ failOpen: true });
      expect(extProc.processingMode.request, 'no request block: request headers SKIP, body NONE').to.equal(undefined);
      expect(extProc.processingMode.response).to.deep.equal({ body: shadow ? 'Streamed' : 'Buffered', attributes: ['xds.route_name', 'xds.route_metadata'] });
      expect(extProc.shadowMode === true).to.equal(shadow);
      const hook = route.spec.rules.find((rule: { name: string }) => rule.name === 'okta-token-hook');
      expect(hook.backendRefs[0]).to.include({ kind: 'Service', name: 'token-tap' });
      const service = objects.find((object) => object.kind === 'Service' && object.metadata.name === 'token-tap')!;
      expect(service.spec.ports.find((p: { name: string }) => p.name === 'hook').port).to.equal(hook.backendRefs[0].port);
    }
  });

  it("readiness: the gateway's Envoy reaches ext_proc through the Service (ready pods only) with no health check of its own, so the sidecar's /readyz is what admits a pod", () => {
    for (const file of Object.keys(gatewayExampleFiles())) {
      const objects = objectsOf(file);
      const statefulSet = objects.find((object) => object.kind === 'StatefulSet')!;
      const container = statefulSet.spec.template.spec.containers[0];
      // 200 once ext_proc is served (test/integration/ops.test.ts): no stream reaches a sidecar not serving yet.
      expect(container.readinessProbe.httpGet, file).to.deep.equal({ path: '/readyz', port: 'ops' });
      expect(container.ports.find((port: { name: string }) => port.name === 'ops').containerPort).to.equal(9464);
      const extProcService = objects.find((object) => object.kind === 'Service' && object.metadata.name === 'token-tap-extproc')!;
      expect(extProcService.spec.selector).to.deep.equal(statefulSet.spec.selector.matchLabels);
      expect(extProcService.spec.publishNotReadyAddresses, `${file}: not-ready pods stay out of the endpoints`).to.not.equal(true);
      const policy = objects.find((object) => object.kind === 'EnvoyExtensionPolicy');
      const filter = objects.find((object) => object.kind === 'EnvoyFilter');
      if (policy) expect(policy.spec.extProc[0].backendRefs).to.deep.equal([{ kind: 'Service', name: 'token-tap-extproc', port: 50051 }]);
      if (filter)
        expect(filter.spec.configPatches[0].patch.value.typed_config.grpc_service.envoy_grpc.cluster_name).to.equal(
          'outbound|50051||token-tap-extproc.token-tap.svc.cluster.local',
        );
      expect(Boolean(policy) !== Boolean(filter), file).to.equal(true);
      // No active health check is rendered: were there one, the gateway could see a ready pod as unhealthy (and the reverse).
      expect(read(file)).to.not.match(/healthCheck|health_check/);
    }
  });

  it('the sidecar listens on its pod address, never a wildcard, and only the gateway proxies reach ext_proc', () => {
    for (const [file, proxies] of [
      ['deploy/envoy-gateway/token-tap.yaml', { 'app.kubernetes.io/managed-by': 'envoy-gateway', 'app.kubernetes.io/component': 'proxy' }],
      ['deploy/istio/token-tap.yaml', { istio: 'ingressgateway' }],
    ] as const) {
      const objects = objectsOf(file);
      const container = objects.find((object) => object.kind === 'StatefulSet')!.spec.template.spec.containers[0];
      // The gateway's proxies are other pods: remote by design, said explicitly (the sidecar warns at start).
      expect(container.args).to.deep.equal(['serve', '--listen', '$(POD_IP):50051', '--allow-remote-extproc']);
      expect(container.env[0]).to.deep.equal({ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
      const policy = objects.find((object) => object.kind === 'NetworkPolicy')!;
      const extProcRule = policy.spec.ingress.find((rule: { ports: Array<{ port: number }> }) => rule.ports.some((p) => p.port === 50051));
      expect(extProcRule.from).to.have.length(1);
      expect(extProcRule.from[0].podSelector.matchLabels).to.deep.equal(proxies);
    }
  });

  it('versions are pinned and agree: image tag = package version, model packages pinned exactly', () => {
    for (const file of Object.keys(gatewayExampleFiles())) {
      for (const object of objectsOf(file).filter((o) => o.kind === 'StatefulSet')) {
        expect(object.spec.template.spec.containers[0].image, file).to.equal(`idp-token-tap:${packageJson.version}`);
      }
    }
    for (const name of ['@kubernetes-models/gateway-api', '@kubernetes-models/istio'])
      expect(packageJson.devDependencies[name], name).to.match(/^\d+\.\d+\.\d+$/);
    // The sidecar's TOKEN_TAP_ROUTE_IDPS names exactly the policy's rules.
    const objects = objectsOf('deploy/envoy-gateway/token-tap.yaml');
    const env = objects.find((o) => o.kind === 'StatefulSet')!.spec.template.spec.containers[0].env as Array<{ name: string; value?: string }>;
    expect(env.find((entry) => entry.name === 'TOKEN_TAP_ROUTE_IDPS')!.value).to.equal(
      'httproute/token-tap/token-tap-idps/entra=entra,httproute/token-tap/token-tap-idps/google=google',
    );
  });

  it('token-tap envoy-gateway refuses what it cannot render, every problem at once', () => {
    const flags = {
      idp: ['BAD=https://x.example/token', 'q=https://x.example/token?tenant=1'],
      mode: 'observability' as const,
      namespace: 'Token_Tap',
      gateway: 'eg',
      hostname: [],
      istio: true,
    };
    expect(() => renderGatewayCommand(flags, Error)).to.throw(/IdP name "BAD"[\s\S]*--namespace[\s\S]*--hostname/);
    expect(() =>
      renderGatewayCommand({ ...flags, idp: ['q=https://x.example/token?tenant=1'], namespace: 'token-tap', hostname: ['h.example'] }, Error),
    ).to.throw(/query/);
  });

  it('the Envoy config in them passes envoy --mode validate (Envoy Gateway shaped bootstraps, and the EnvoyFilter patches applied)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-gw-'));
    const files: string[] = [];
    for (const file of ['deploy/envoy-gateway/token-tap.yaml', 'deploy/envoy-gateway/token-tap.buffered.yaml']) {
      const out = path.join(dir, `${path.basename(file)}.envoy.yaml`);
      writeFileSync(out, envoyGatewayShapedBootstrap({ resources: objectsOf(file), listenPort: 8080, adminPort: 9901, sidecarPort: 50051, hookPort: 8081 }));
      files.push(out);
    }
    // Istio: the HTTP_FILTER patches' values before the router, in order.
    const filter = objectsOf('deploy/istio/token-tap.yaml').find((object) => object.kind === 'EnvoyFilter')!;
    const patches = filter.spec.configPatches as Array<{ applyTo: string; match: any; patch: { value: any } }>;
    const [filterPatch, ...filterPatches] = patches.filter((patch) => patch.applyTo === 'HTTP_FILTER');
    expect(filterPatch!.match.context).to.equal('GATEWAY');
    const cluster = filterPatch!.patch.value.typed_config.grpc_service.envoy_grpc.cluster_name as string;
    // Each HTTP_ROUTE patch merged into its route; the hook route's patches (one per host) into one hook route.
    const routePatches = patches.filter((patch) => patch.applyTo === 'HTTP_ROUTE');
    const routesByName = new Map<string, any>();
    for (const patch of routePatches) {
      const name = patch.match.routeConfiguration.vhost.route.name as string;
      const merged = routesByName.get(name) ?? { name, match: { prefix: `/${name}` }, route: { cluster } };
      const value = patch.patch.value;
      routesByName.set(name, {
        ...merged,
        route: { ...merged.route, ...value.route },
        typed_per_filter_config: { ...merged.typed_per_filter_config, ...value.typed_per_filter_config },
      });
    }
    const istio = {
      static_resources: {
        listeners: [
          {
            name: 'gateway',
            address: { socket_address: { address: '127.0.0.1', port_value: 8080 } },
            filter_chains: [
              {
                filters: [
                  {
                    name: 'envoy.filters.network.http_connection_manager',
                    typed_config: {
                      '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                      stat_prefix: 'gw',
                      route_config: {
                        virtual_hosts: [
                          {
                            name: 'gw',
                            domains: ['*'],
                            routes: [...routesByName.values()],
                          },
                        ],
                      },
                      http_filters: [
                        filterPatch!.patch.value,
                        ...filterPatches.map((patch) => patch.patch.value),
                        { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
                      ],
                    },
                  },
                ],
              },
            ],
          },
        ],
        clusters: [
          {
            name: cluster,
            type: 'STATIC',
            load_assignment: {
              cluster_name: cluster,
              endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 50051 } } } }] }],
            },
          },
        ],
      },
    };
    const istioFile = path.join(dir, 'istio.envoy.yaml');
    writeFileSync(istioFile, stringify(istio));
    files.push(istioFile);
    for (const file of files) {
      const result = await validateEnvoyConfig(file);
      expect(result.ok, `${path.basename(file)}: ${result.output}`).to.equal(true);
    }
  });
});
