// The alerting rules (deploy/prometheus/rules.yaml) as Prometheus's own promtool reads them: they
// parse (`promtool check rules`), and each alert fires for its faulty series and not for a healthy
// one (`promtool test rules` on deploy/prometheus/rules.test.yaml, which must cover every alert).
// Every alert carries a severity, a summary, a description naming the IdP when its series have one,
// and a runbook_url into docs/runbooks.md (the anchors are checked in docs-links.test.ts).
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse, stringify } from 'yaml';
import { alertRules, RULES_FILE } from '../support/alert-rules.js';
import { prometheusBinaries } from '../support/prometheus-preflight.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const RULE_TESTS = 'deploy/prometheus/rules.test.yaml';

interface RuleTest {
  name: string;
  input_series: Array<{ series: string; values: string }>;
  alert_rule_test: Array<{
    eval_time: string;
    alertname: string;
    exp_alerts: Array<{ exp_labels: Record<string, string>; exp_annotations: Record<string, string> }>;
  }>;
}

function promtool(args: string[], cwd = ROOT): { status: number | null; output: string } {
  const result = spawnSync(prometheusBinaries().promtool, args, { cwd, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('alerting rules (deploy/prometheus/rules.yaml, promtool)', () => {
  const rules = alertRules();
  const tests = (parse(readFileSync(path.join(ROOT, RULE_TESTS), 'utf8')) as { tests: RuleTest[] }).tests;

  it('pass `promtool check rules`', () => {
    const { status, output } = promtool(['check', 'rules', RULES_FILE]);
    expect(status, output).to.equal(0);
    expect(output).to.contain(`SUCCESS: ${rules.length} rules found`);
  });

  it('pass `promtool test rules`: each alert fires on its faulty series and not on the healthy ones', () => {
    const { status, output } = promtool(['test', 'rules', RULE_TESTS]);
    expect(status, output).to.equal(0);
    expect(output).to.contain('SUCCESS');
  });

  it('has, for every alert, an evaluation where it fires for "faulty" only and one where it does not fire', () => {
    const problems: string[] = [];
    for (const { alert } of rules) {
      const evaluations = tests.flatMap((test) =>
        test.alert_rule_test.filter((evaluation) => evaluation.alertname === alert).map((evaluation) => ({ test, evaluation })),
      );
      const fires = evaluations.filter(({ evaluation }) => evaluation.exp_alerts.length > 0);
      if (fires.length === 0) problems.push(`${alert}: no evaluation where it fires`);
      if (!evaluations.some(({ evaluation }) => evaluation.exp_alerts.length === 0)) problems.push(`${alert}: no evaluation where it stays quiet`);
      for (const { test, evaluation } of fires) {
        if (!test.input_series.some((input) => /(instance|idp)="healthy"/.test(input.series)))
          problems.push(`${alert} (${test.name}): no healthy series beside the faulty one`);
        if (evaluation.exp_alerts.some((expected) => expected.exp_labels.instance === 'healthy' || expected.exp_labels.idp === 'healthy'))
          problems.push(`${alert}: fires for a healthy series`);
      }
    }
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  it('gives every alert a severity, a summary, a description naming the IdP where its series have one, and a runbook in docs/runbooks.md', () => {
    const problems: string[] = [];
    for (const rule of rules) {
      if (!['critical', 'warning'].includes(rule.labels?.severity ?? '')) problems.push(`${rule.alert}: severity ${rule.labels?.severity}`);
      if (!rule.annotations?.summary) problems.push(`${rule.alert}: no summary`);
      if (!rule.annotations?.description) problems.push(`${rule.alert}: no description`);
      if (rule.annotations?.runbook_url !== `docs/runbooks.md#${rule.alert.toLowerCase()}`)
        problems.push(`${rule.alert}: runbook_url ${rule.annotations?.runbook_url}`);
      const perIdp = tests.some((test) =>
        test.alert_rule_test.some(
          (evaluation) => evaluation.alertname === rule.alert && evaluation.exp_alerts.some((expected) => 'idp' in expected.exp_labels),
        ),
      );
      if (perIdp && !rule.annotations?.description?.includes('{{ $labels.idp }}'))
        problems.push(`${rule.alert}: fires per IdP but its description does not name it`);
    }
    expect(rules.length).to.be.at.least(16);
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  it('fail `promtool test rules` when an alert stops firing (the unit tests can fail)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-rules-'));
    try {
      // The Postgres alert's threshold moved out of reach: its faulty series no longer fires it.
      const broken = readFileSync(path.join(ROOT, RULES_FILE), 'utf8').replace('expr: token_tap_postgres_up == 0', 'expr: token_tap_postgres_up == -1');
      expect(broken).to.contain('token_tap_postgres_up == -1');
      writeFileSync(path.join(dir, 'rules.yaml'), broken);
      copyFileSync(path.join(ROOT, RULE_TESTS), path.join(dir, 'rules.test.yaml'));
      const { status, output } = promtool(['test', 'rules', 'rules.test.yaml'], dir);
      expect(status).to.not.equal(0);
      expect(output).to.contain('TokenTapPostgresUnreachable');
      // And an expectation for the healthy instance is caught as well.
      const tests = parse(readFileSync(path.join(ROOT, RULE_TESTS), 'utf8'));
      copyFileSync(path.join(ROOT, RULES_FILE), path.join(dir, 'rules.yaml'));
      const drop = tests.tests.find((test: RuleTest) => test.name === 'TokenTapCapturesDropped');
      drop.input_series[1].values = drop.input_series[0].values;
      writeFileSync(path.join(dir, 'rules.test.yaml'), stringify(tests));
      const healthyFires = promtool(['test', 'rules', 'rules.test.yaml'], dir);
      expect(healthyFires.status).to.not.equal(0);
      expect(healthyFires.output).to.contain('instance="healthy"');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
