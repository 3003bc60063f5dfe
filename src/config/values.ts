// Reading single settings: addresses and integers. Each problem joins a list, so the caller
// reports every problem at once; no message quotes a secret.
export interface HostPort {
  host: string;
  port: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

export function parseHostPort(text: string, what: string): HostPort {
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number.parseInt(match[3]!, 10) : NaN;
  if (!match || port > 65535) throw new Error(`${what} must be HOST:PORT (for example 127.0.0.1:50051), got "${text}"`);
  return { host: match[1] ?? match[2]!, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An integer setting above 0 (its fallback when unset); a bad value joins `problems`. */
export function positiveInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number.parseInt(raw, 10) <= 0) {
    problems.push(`${name} must be a positive integer, got "${raw}"`);
    return fallback;
  }
  return Number.parseInt(raw, 10);
}

/** An integer setting of 0 or more (its fallback when unset); a bad value joins `problems`. */
export function nonNegativeInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) {
    problems.push(`${name} must be an integer of 0 or more, got "${raw}"`);
    return fallback;
  }
  return Number.parseInt(raw, 10);
}
