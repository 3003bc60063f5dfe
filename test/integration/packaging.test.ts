// Static checks of what we ship for Docker and Kubernetes (no engine runs here): every file
// parses and passes its schema, and images and versions agree across files.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parseAllDocuments, parse } from 'yaml';
import { composeValidator } from '../support/compose-schema.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8');
const K8S_DIR = 'deploy/kubernetes/';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec?: any;
}

async function modelFor(object: K8sObject): Promise<{ validate(): void }> {
  const [group, version] = object.apiVersion.includes('/') ? object.apiVersion.split('/') : ['', object.apiVersion];
  const modulePath = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
  const models = (await import(modulePath)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = models[object.kind];
  if (!Model) throw new Error(`no model for ${object.apiVersion} ${object.kind}`);
  return new Model(object);
}

function k8sObjects(): K8sObject[] {
  return readdirSync(`${root}${K8S_DIR}`)
    .filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml' && file !== 'envoy.yaml')
    .flatMap((file) => parseAllDocuments(read(`${K8S_DIR}${file}`)).map((doc) => doc.toJSON() as K8sObject));
}

describe('packaging (static checks)', () => {
  const envoyVersion = /^ENVOY_VERSION="([\d.]+)"/m.exec(read('scripts/setup'))?.[1];
  const packageVersion = (JSON.parse(read('package.json')) as { version: string }).version;

  it('scripts/setup pins an Envoy 1.40.x wheel', () => {
    expect(envoyVersion).to.match(/^1\.40\.\d+$/);
  });

  it('docker-compose.yml passes the Compose Specification schema', () => {
    const validate = composeValidator();
    const compose = parse(read('docker-compose.yml'));
    expect(validate(compose), JSON.stringify(validate.errors)).to.equal(true);
    // The check can fail: an unknown key is refused.
    expect(validate({ ...compose, services: { ...compose.services, envoy: { ...compose.services.envoy, imagee: 'x' } } })).to.equal(false);
  });

  it('docker-compose.yml runs the venv Envoy version, mounts a shipped config, and pins every image', () => {
    const compose = parse(read('docker-compose.yml')) as { services: Record<string, { image?: string; volumes?: string[]; network_mode?: string }> };
    expect(compose.services.envoy!.image).to.equal(`envoyproxy/envoy:v${envoyVersion}`);
    expect(compose.services.envoy!.network_mode).to.equal('service:token-tap');
    expect(compose.services['token-tap']!.image).to.equal(`idp-token-tap:${packageVersion}`);
    expect(compose.services['demo-idp']!.image).to.equal(`idp-token-tap-demo-idp:${packageVersion}`);
    for (const [name, service] of Object.entries(compose.services)) expect((service as { healthcheck?: unknown }).healthcheck, `${name} has a health check`).to.not.equal(undefined);
    const mounted = compose.services.envoy!.volumes!.map((volume) => volume.split(':')[0]!.replace(/^\.\//, ''));
    for (const file of mounted) expect(existsSync(`${root}${file}`), file).to.equal(true);
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.image) expect(service.image, name).to.match(/:[\w.-]*\d[\w.-]*$/, 'images are pinned to a version');
    }
  });

  it('the Dockerfile pins its base image and runs as a non-root user', () => {
    const dockerfile = read('Dockerfile');
    const stages = [...dockerfile.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gm)].map((match) => ({ base: match[1]!, name: match[2] }));
    expect(stages.length).to.be.at.least(2);
    const names = new Set(stages.map((stage) => stage.name).filter(Boolean));
    // Every stage starts from a pinned Node image or from an earlier stage.
    for (const { base } of stages) if (!names.has(base)) expect(base).to.match(/^node:\d+\.\d+/);
    expect(new Set(stages.filter((stage) => !names.has(stage.base)).map((stage) => stage.base)).size, 'one Node version').to.equal(1);
    // The last stage is the sidecar image: production dependencies only, non-root.
    const last = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(last).to.match(/^USER node$/m);
    expect(last).to.contain('--omit=dev');
    // The demo IdP stage compose builds exists.
    expect(names.has('demo-idp')).to.equal(true);
  });

  it('every Kubernetes object passes the Kubernetes OpenAPI schema (kubernetes-models)', async () => {
    const objects = k8sObjects();
    expect(objects.map((object) => object.kind).sort()).to.include.members(['Deployment', 'Service', 'NetworkPolicy', 'PodDisruptionBudget', 'Secret', 'Namespace']);
    for (const object of objects) (await modelFor(object)).validate();
    // The check can fail: a port given as text is refused.
    const broken = structuredClone(objects.find((object) => object.kind === 'Deployment')!);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'eighty';
    let refused = false;
    try {
      (await modelFor(broken)).validate();
    } catch {
      refused = true;
    }
    expect(refused).to.equal(true);
  });

  it('the kustomization lists files that exist, and the pod is hardened as the issue asks', () => {
    const kustomization = parse(read(`${K8S_DIR}kustomization.yaml`)) as { resources: string[]; configMapGenerator: Array<{ files: string[] }>; images: Array<{ name: string; newTag: string }> };
    for (const file of [...kustomization.resources, ...kustomization.configMapGenerator.flatMap((generator) => generator.files)]) {
      expect(existsSync(`${root}${K8S_DIR}${file}`), file).to.equal(true);
    }
    expect(kustomization.images).to.deep.include({ name: 'envoyproxy/envoy', newTag: `v${envoyVersion}` });
    expect(kustomization.images).to.deep.include({ name: 'idp-token-tap', newTag: packageVersion });
    const deployment = k8sObjects().find((object) => object.kind === 'Deployment')!;
    const pod = deployment.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).to.equal(true);
    for (const container of pod.containers) {
      expect(container.securityContext, container.name).to.include({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
      expect(container.readinessProbe, container.name).to.be.an('object');
      expect(container.resources.limits, container.name).to.have.keys('cpu', 'memory');
    }
    expect(pod.containers.map((container: { image: string }) => container.image)).to.deep.equal([`envoyproxy/envoy:v${envoyVersion}`, `idp-token-tap:${packageVersion}`]);
    expect(pod.volumes.find((volume: { name: string }) => volume.name === 'spool').emptyDir).to.be.an('object');
  });
});
