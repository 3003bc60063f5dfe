// deploy/kubernetes/monitoring/ (no cluster runs here): the PrometheusRule holds exactly the groups of
// deploy/prometheus/rules.yaml (so the two cannot drift) and passes promtool; the PodMonitor scrapes
// container ports the StatefulSet has, under the job names the rules select on, and Envoy's stats
// at the path its readiness listener routes to the admin; the NetworkPolicy lets the monitoring
// namespace reach both ports.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { PROMETHEUS_RULE_FILE, prometheusRuleYaml } from '../../scripts/render-prometheus-rule.js';
import { ENVOY_READY_PORT } from '../../src/contract.js';
import { STATS_PATH } from '../../src/envoyconfig/readiness.js';
import { alertRules, RULES_FILE, ruleGroups } from '../support/alert-rules.js';
import { prometheusBinaries } from '../support/prometheus-preflight.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const MONITORING = 'deploy/kubernetes/monitoring/';

interface Container {
  name: string;
  ports: Array<{ name: string; containerPort: number }>;
}

describe('Kubernetes monitoring manifests (deploy/kubernetes/monitoring)', () => {
  const rule = parse(read(PROMETHEUS_RULE_FILE)) as { apiVersion: string; kind: string; metadata: { name: string }; spec: { groups: unknown[] } };
  const podMonitor = parse(read(`${MONITORING}podmonitor.yaml`)) as {
    apiVersion: string;
    kind: string;
    spec: {
      selector: { matchLabels: Record<string, string> };
      podMetricsEndpoints: Array<{ port: string; path: string; relabelings: Array<{ targetLabel: string; replacement: string }> }>;
    };
  };
  const statefulSet = parseAllDocuments(read('deploy/kubernetes/statefulset.yaml'))
    .map((doc) => doc.toJSON())
    .find((object) => object.kind === 'StatefulSet');

  it('the PrometheusRule holds exactly the groups of deploy/prometheus/rules.yaml, as its generator writes it', () => {
    expect(rule.apiVersion).to.equal('monitoring.coreos.com/v1');
    expect(rule.kind).to.equal('PrometheusRule');
    expect(rule.spec.groups).to.deep.equal(ruleGroups());
    expect(read(PROMETHEUS_RULE_FILE), 'regenerate: npm run build && node dist/scripts/render-prometheus-rule.js').to.equal(
      prometheusRuleYaml(read(RULES_FILE)),
    );
    // The check can fail: one threshold changed in rules.yaml no longer matches.
    const drifted = parse(prometheusRuleYaml(read(RULES_FILE).replace('> 0.8', '> 0.9')));
    expect(drifted.spec.groups).to.not.deep.equal(ruleGroups());
  });

  it("the PrometheusRule's groups pass `promtool check rules`", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-prometheusrule-'));
    try {
      writeFileSync(path.join(dir, 'rules.yaml'), stringify({ groups: rule.spec.groups }));
      const result = spawnSync(prometheusBinaries().promtool, ['check', 'rules', 'rules.yaml'], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      expect(result.status, `${result.stdout}${result.stderr}`).to.equal(0);
      expect(result.stdout).to.contain(`SUCCESS: ${alertRules().length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the PodMonitor scrapes the sidecar's ops port and Envoy's stats on its readiness port, under the jobs the rules select on", () => {
    expect(podMonitor.kind).to.equal('PodMonitor');
    const podLabels = statefulSet.spec.template.metadata.labels as Record<string, string>;
    for (const [key, value] of Object.entries(podMonitor.spec.selector.matchLabels)) expect(podLabels[key], key).to.equal(value);
    const containers = statefulSet.spec.template.spec.containers as Container[];
    const portOf = (container: string, name: string) =>
      containers.find((candidate) => candidate.name === container)?.ports.find((port) => port.name === name)?.containerPort;
    const endpoints = podMonitor.spec.podMetricsEndpoints.map((endpoint) => ({
      port: endpoint.port,
      path: endpoint.path,
      job: endpoint.relabelings.find((relabel) => relabel.targetLabel === 'job')?.replacement,
    }));
    expect(endpoints).to.deep.equal([
      { port: 'ops', path: '/metrics', job: 'token-tap-sidecar' },
      { port: 'ready', path: STATS_PATH, job: 'token-tap-envoy' },
    ]);
    expect(portOf('token-tap', 'ops')).to.equal(9464);
    expect(portOf('envoy', 'ready')).to.equal(ENVOY_READY_PORT);
    // The rules name exactly these jobs (up{job=...}).
    const jobs = new Set(alertRules().flatMap((alert) => [...alert.expr.matchAll(/job="([^"]+)"/g)].map((match) => match[1])));
    for (const job of jobs) expect(endpoints.map((endpoint) => endpoint.job)).to.include(job);
    // The pod's Envoy routes the stats path on its readiness listener (rendered from src/envoyconfig).
    const envoy = parse(read('deploy/kubernetes/envoy.yaml'));
    const ready = envoy.static_resources.listeners.find((listener: { name: string }) => listener.name === 'token_tap_ready');
    expect(ready.address.socket_address.port_value).to.equal(ENVOY_READY_PORT);
    expect(JSON.stringify(ready)).to.contain(`"path":"${STATS_PATH}"`);
    expect(envoy.admin.address.socket_address.address, 'the admin itself stays on loopback').to.equal('127.0.0.1');
  });

  it('the kustomization lists files that exist, and the NetworkPolicy lets the monitoring namespace reach both ports', () => {
    const kustomization = parse(read(`${MONITORING}kustomization.yaml`)) as { resources: string[] };
    expect(kustomization.resources).to.have.members(['prometheusrule.yaml', 'podmonitor.yaml']);
    for (const file of kustomization.resources) expect(existsSync(path.join(ROOT, MONITORING, file)), file).to.equal(true);
    const policy = parse(read('deploy/kubernetes/networkpolicy.yaml'));
    type Peer = { namespaceSelector?: { matchLabels: Record<string, string> }; podSelector?: { matchLabels: Record<string, string> } };
    const fromMonitoring = policy.spec.ingress.find((rule: { from?: Peer[] }) =>
      rule.from?.some((peer) => peer.namespaceSelector?.matchLabels['kubernetes.io/metadata.name'] === 'monitoring'),
    );
    expect(fromMonitoring.ports.map((port: { port: number }) => port.port)).to.have.members([9464, ENVOY_READY_PORT]);
    // Prometheus's pods only, not every pod of the namespace (Envoy serves its stats on its main thread).
    for (const peer of fromMonitoring.from as Peer[])
      expect(peer.podSelector?.matchLabels, 'a pod selector beside the namespace').to.deep.equal({ 'app.kubernetes.io/name': 'prometheus' });
  });
});
