// Writes deploy/kubernetes/monitoring/prometheusrule.yaml: deploy/prometheus/rules.yaml's groups as
// a PrometheusRule for the Prometheus Operator. test/integration/packaging.test.ts checks they stay equal.
import { readFileSync, writeFileSync } from 'node:fs';
import { Document, parse } from 'yaml';

export const RULES_FILE = 'deploy/prometheus/rules.yaml';
export const PROMETHEUS_RULE_FILE = 'deploy/kubernetes/monitoring/prometheusrule.yaml';

export function prometheusRuleYaml(rulesYaml: string): string {
  const { groups } = parse(rulesYaml) as { groups: unknown[] };
  const doc = new Document({
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'token-tap' },
    spec: { groups },
  });
  doc.commentBefore = [
    ` The alerting rules of ${RULES_FILE}, for the Prometheus Operator. Generated: edit rules.yaml,`,
    ' then: npm run build && node dist/scripts/render-prometheus-rule.js',
    " Runbooks: docs/runbooks.md (each alert's runbook_url).",
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}

if (process.argv[1]?.endsWith('render-prometheus-rule.js')) {
  writeFileSync(PROMETHEUS_RULE_FILE, prometheusRuleYaml(readFileSync(RULES_FILE, 'utf8')));
  process.stdout.write(`wrote ${PROMETHEUS_RULE_FILE}\n`);
}
