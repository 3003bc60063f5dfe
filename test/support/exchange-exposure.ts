// What the manifests we ship must hold for the token exchange to be reachable by in-cluster services
// with TLS: the sidecar listens beyond loopback with a certificate from its Secret, reads its file
// from a ConfigMap, a Service port reaches it, and only labelled clients of one named namespace may
// connect. Shared by the deploy/kubernetes checks (packaging.test.ts: the base with its opt-in
// component exchange/) and the Envoy Gateway and Istio manifests rendered with --token-exchange
// (gateway-manifests.test.ts). The shipped bases have none of it: the exchange is opt-in.
import { expect } from 'chai';
import { isLoopbackOnly, parseListenAddress } from '../../src/config/values.js';

interface K8sObject {
  kind: string;
  metadata: { name: string };
  spec?: any;
}

/** Checks the exchange's exposure in `objects`; returns the key its file is read under in the ConfigMap `configMap`. */
export function expectExchangeExposed(
  objects: readonly K8sObject[],
  where: string,
  names = { tlsSecret: 'token-tap-exchange-tls', configMap: 'token-tap-exchange' },
): string {
  const statefulSet = objects.find((object) => object.kind === 'StatefulSet')!;
  const pod = statefulSet.spec.template.spec;
  const sidecar = pod.containers.find((container: { name: string }) => container.name === 'token-tap');
  const env = Object.fromEntries((sidecar.env as Array<{ name: string; value?: string }>).map((entry) => [entry.name, entry.value]));
  const listen = parseListenAddress(env.TOKEN_TAP_EXCHANGE_LISTEN!, 'TOKEN_TAP_EXCHANGE_LISTEN');
  expect(isLoopbackOnly(listen), `${where}: the exchange is reachable from other pods`).to.equal(false);
  const port = (listen as { port: number }).port;
  const containerPort = sidecar.ports.find((candidate: { containerPort: number }) => candidate.containerPort === port);
  expect(containerPort?.name, `${where}: a named container port for the exchange`).to.equal('exchange');
  const volumeOf = (file: string) => {
    const mount = sidecar.volumeMounts.find((candidate: { mountPath: string }) => file.startsWith(`${candidate.mountPath}/`));
    expect(mount?.readOnly, `${where}: ${file} is on a read-only mount`).to.equal(true);
    return { volume: pod.volumes.find((volume: { name: string }) => volume.name === mount.name), key: file.slice(mount.mountPath.length + 1) };
  };
  // TLS beyond loopback, the certificate from its own Secret; no way around it is set.
  for (const name of ['TOKEN_TAP_EXCHANGE_TLS_CERT', 'TOKEN_TAP_EXCHANGE_TLS_KEY'])
    expect(volumeOf(env[name]!).volume?.secret?.secretName, `${where} ${name}`).to.equal(names.tlsSecret);
  expect(
    Object.keys(env).filter((name) => /INSECURE|WITHOUT/.test(name) && name.includes('EXCHANGE')),
    where,
  ).to.deep.equal([]);
  const config = volumeOf(env.TOKEN_TAP_EXCHANGE_CONFIG!);
  expect(config.volume?.configMap?.name, `${where}: the exchange file from a ConfigMap`).to.equal(names.configMap);
  // A Service port in front of it, so callers dial a stable name.
  const service = objects.find((object) => object.kind === 'Service' && object.metadata.name === 'token-tap')!;
  expect(
    service.spec.ports.some((candidate: { port: number; targetPort: string }) => candidate.targetPort === 'exchange' && candidate.port === port),
    `${where}: Service port`,
  ).to.equal(true);
  // Only labelled pods of one namespace named by Kubernetes' own label may connect.
  const policy = objects.find((object) => object.kind === 'NetworkPolicy')!;
  const rules = policy.spec.ingress.filter((rule: { ports: Array<{ port: number }> }) => rule.ports.some((candidate) => candidate.port === port));
  expect(rules, `${where}: one NetworkPolicy rule admits the exchange port`).to.have.length(1);
  expect(rules[0].from, `${where}: the rule names its callers`).to.not.be.empty;
  for (const peer of rules[0].from) {
    expect(Object.keys(peer.namespaceSelector?.matchLabels ?? {}), where).to.deep.equal(['kubernetes.io/metadata.name']);
    expect(peer.podSelector?.matchLabels, where).to.deep.equal({ 'token-tap/client': 'true' });
  }
  return config.key;
}
