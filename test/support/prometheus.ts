// A real Prometheus for the alert tests: the machine's `prometheus` binary (test/run.ts checks it is
// there), on a free loopback port, with its own TSDB in a temporary directory, scraping the given
// targets and evaluating the given rule groups. Never the machine's own Prometheus service.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import type { RuleGroup } from './alert-rules.js';
import { freePort, waitFor } from './ports.js';
import { prometheusBinaries } from './prometheus-preflight.js';

export interface ScrapeTarget {
  job: string;
  /** host:port */
  target: string;
  metricsPath?: string;
}

export interface ActiveAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  activeAt: string;
  value: string;
}

export interface RunningPrometheus {
  url: string;
  /** Alerts pending or firing now. */
  alerts(): Promise<ActiveAlert[]>;
  /** An instant query's result vector. */
  query(promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Every metric name Prometheus holds a series of (what its scrapes brought in). */
  metricNames(): Promise<string[]>;
  logs(): string;
  stop(): Promise<void>;
}

async function api<T>(url: string): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  const body = (await response.json()) as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`Prometheus ${url}: ${body.error ?? response.status}`);
  return body.data;
}

export async function startPrometheus(options: { targets: ScrapeTarget[]; groups: RuleGroup[]; intervalSeconds?: number }): Promise<RunningPrometheus> {
  const { prometheus } = prometheusBinaries();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-prometheus-'));
  const interval = `${options.intervalSeconds ?? 1}s`;
  writeFileSync(path.join(dir, 'rules.yaml'), stringify({ groups: options.groups }));
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: interval, evaluation_interval: interval, scrape_timeout: interval },
      rule_files: [path.join(dir, 'rules.yaml')],
      scrape_configs: options.targets.map((target) => ({
        job_name: target.job,
        metrics_path: target.metricsPath ?? '/metrics',
        static_configs: [{ targets: [target.target] }],
      })),
    }),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    prometheus,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      'Prometheus to be ready',
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${output}`);
        const response = await fetch(`${url}/-/ready`).catch(() => undefined);
        return response?.ok ? true : undefined;
      },
      20_000,
      100,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url,
    alerts: async () => (await api<{ alerts: ActiveAlert[] }>(`${url}/api/v1/alerts`)).alerts,
    query: async (promql) =>
      (await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`))
        .result,
    metricNames: () => api(`${url}/api/v1/label/__name__/values`),
    logs: () => output,
    stop,
  };
}

/** The alert named `name` in state `state` with these labels, if active now. */
export function findAlert(
  alerts: ActiveAlert[],
  name: string,
  labels: Record<string, string> = {},
  state: ActiveAlert['state'] = 'firing',
): ActiveAlert | undefined {
  return alerts.find(
    (alert) => alert.labels.alertname === name && alert.state === state && Object.entries(labels).every(([key, value]) => alert.labels[key] === value),
  );
}
