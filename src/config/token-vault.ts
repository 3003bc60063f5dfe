// Settings of the TokenVault API and the vault's upkeep, read with the sidecar's config: every
// problem goes into the same list, and no secret value ever appears in one.
import { readFileSync } from 'node:fs';
import { API_TIMEOUTS, readPostgresTimeouts, type PostgresTimeouts } from './postgres.js';
import { nonNegativeInteger, parseHostPort, positiveInteger, type HostPort } from './values.js';
import { type IdpClients } from '../idp/client.js';
import { loadIdpClients } from './idp-file.js';
import { readAge, type RetentionPolicy } from '../store/purge.js';

export const DEFAULT_API_LISTEN = '127.0.0.1:50052';

export interface ApiTls {
  cert: Buffer;
  key: Buffer;
  /** With a client CA, every caller must present a certificate it signed (mTLS). */
  clientCa: Buffer | undefined;
}

export interface TokenVaultConfig {
  /** undefined: the API is off (TOKEN_TAP_API_LISTEN=off). */
  listen: HostPort | undefined;
  tls: ApiTls | undefined;
  /** GetGrant refreshes first when the access token expires within this many seconds (0: never unasked). */
  autoRefreshSeconds: number;
  /** The API's own Postgres connections, apart from the capture writer's. */
  poolSize: number;
  /** Timeouts of the API's Postgres connections (TOKEN_TAP_API_PG_*_MS), short: callers wait on them. */
  postgres: PostgresTimeouts;
  idpClients: IdpClients;
  retention: RetentionPolicy;
  /** Run the retention purge in the sidecar this often; undefined: only by `token-tap purge`. */
  purgeIntervalMs: number | undefined;
}

export interface TokenVaultFlags {
  apiListen?: string;
}

function readFile(env: NodeJS.ProcessEnv, name: string, problems: string[]): Buffer | undefined {
  const file = env[name];
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch (error) {
    problems.push(`${name}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
}

function readTls(env: NodeJS.ProcessEnv, problems: string[]): ApiTls | undefined {
  const names = ['TOKEN_TAP_API_TLS_CERT', 'TOKEN_TAP_API_TLS_KEY', 'TOKEN_TAP_API_TLS_CLIENT_CA'] as const;
  const [certSet, keySet, caSet] = names.map((name) => Boolean(env[name]));
  if (!certSet && !keySet) {
    if (caSet) problems.push('TOKEN_TAP_API_TLS_CLIENT_CA needs TOKEN_TAP_API_TLS_CERT and TOKEN_TAP_API_TLS_KEY (the server side of TLS)');
    return undefined;
  }
  if (certSet !== keySet) {
    problems.push('TOKEN_TAP_API_TLS_CERT and TOKEN_TAP_API_TLS_KEY go together (PEM certificate chain and its private key)');
    return undefined;
  }
  const cert = readFile(env, 'TOKEN_TAP_API_TLS_CERT', problems);
  const key = readFile(env, 'TOKEN_TAP_API_TLS_KEY', problems);
  const clientCa = readFile(env, 'TOKEN_TAP_API_TLS_CLIENT_CA', problems);
  return cert && key ? { cert, key, clientCa } : undefined;
}

export function readTokenVaultConfig(env: NodeJS.ProcessEnv, flags: TokenVaultFlags, problems: string[]): TokenVaultConfig {
  const listenText = flags.apiListen ?? env.TOKEN_TAP_API_LISTEN ?? DEFAULT_API_LISTEN;
  let listen: HostPort | undefined;
  if (listenText.trim().toLowerCase() !== 'off') {
    try {
      listen = parseHostPort(listenText, '--api-listen (TOKEN_TAP_API_LISTEN)');
    } catch (error) {
      problems.push(`${(error as Error).message}, or "off"`);
    }
  }
  const tls = readTls(env, problems);
  const retention: RetentionPolicy = {
    grantsOlderThanMs: readAge(env.TOKEN_TAP_GRANT_RETENTION, 'TOKEN_TAP_GRANT_RETENTION', problems),
    eventsOlderThanMs: readAge(env.TOKEN_TAP_EVENT_RETENTION, 'TOKEN_TAP_EVENT_RETENTION', problems),
  };
  const purgeIntervalMs = readAge(env.TOKEN_TAP_PURGE_INTERVAL, 'TOKEN_TAP_PURGE_INTERVAL', problems);
  if (purgeIntervalMs !== undefined && retention.grantsOlderThanMs === undefined && retention.eventsOlderThanMs === undefined) {
    problems.push('TOKEN_TAP_PURGE_INTERVAL is set but there is nothing to purge: set TOKEN_TAP_GRANT_RETENTION and/or TOKEN_TAP_EVENT_RETENTION');
  }
  return {
    listen,
    tls,
    autoRefreshSeconds: nonNegativeInteger(env, 'TOKEN_TAP_API_AUTO_REFRESH_SECONDS', 0, problems),
    poolSize: positiveInteger(env, 'TOKEN_TAP_API_PG_POOL_SIZE', 4, problems),
    postgres: readPostgresTimeouts(env, 'TOKEN_TAP_API_PG', API_TIMEOUTS, problems),
    idpClients: loadIdpClients(env, problems),
    retention,
    purgeIntervalMs,
  };
}
