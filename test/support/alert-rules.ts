// deploy/prometheus/rules.yaml as data: its groups, and its alerting rules in order.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const RULES_FILE = 'deploy/prometheus/rules.yaml';

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

export function ruleGroups(): RuleGroup[] {
  return (parse(readFileSync(path.join(ROOT, RULES_FILE), 'utf8')) as { groups: RuleGroup[] }).groups;
}

export function alertRules(): AlertRule[] {
  return ruleGroups().flatMap((group) => group.rules);
}
