// Settings of the TokenVault API and the vault's upkeep, read with the sidecar's config: every
// problem goes into the same list, and no secret value ever appears in one.
import { readFileSync } from 'node:fs';
import { readPostgresTimeouts } from './postgres.js';
import type { PostgresTimeouts } from '../store/pool-settings.js';
import { formatHostPort, isLoopbackOnly, parseHostPort, type HostPort } from './values.js';
import * as settings from './settings.js';
import { readDuration, readFlag, readInteger, readSet, readText, type TlsFilesSetting } from './settings.js';
import type { IdpClients } from '../idp/client.js';
import { loadIdpClients } from './idp-file.js';
import type { RetentionPolicy } from '../store/purge.js';
import { asError } from '../lib/errors.js';

/** How long a refresh answer may take to be applied before another refresher takes the claim over (operations/refresh.ts). */
export const DEFAULT_REFRESH_APPLY_WINDOW_MS = settings.REFRESH_APPLY_WINDOW_MS.default;

export const DEFAULT_API_LISTEN = settings.API_LISTEN.default;

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
  /**
   * TOKEN_TAP_ALLOW_INSECURE_API=true: the API may listen beyond loopback without TLS (API keys and
   * tokens in clear on the network); warned at every start. Without it such a listener is refused.
   */
  allowInsecure: boolean;
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
  /**
   * TOKEN_TAP_REFRESH_APPLY_WINDOW_MS: how long a refresh's answer may take to reach Postgres after
   * the IdP call ends (its transaction, the pump's retries, a restart's replay of the spool). A
   * refresh claims its grant for the IdP's timeout_ms plus this; only then may another sidecar
   * take the claim over (operations/refresh.ts), and not before this long after Postgres came back from
   * an outage (operations/refresh-takeover.ts).
   */
  refreshApplyWindowMs: number;
  /** Test-only (TOKEN_TAP_FAULT_INJECTION): a failure at the worst moment of a refresh, to prove it loses nothing. */
  faultInjection: RefreshFault | undefined;
  /**
   * TOKEN_TAP_AUDIT_RELAXED_COMMIT=true: access_events rows commit without waiting for the WAL
   * flush (synchronous_commit off), so a Postgres crash can lose the last ~200 ms of them. Off by default.
   */
  auditRelaxedCommit: boolean;
}

export const REFRESH_FAULTS = ['kill-after-refresh-answer', 'terminate-backend-after-refresh-answer'] as const;
export type RefreshFault = (typeof REFRESH_FAULTS)[number];

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

/**
 * The PEM files of a declared TLS group (e.g. TOKEN_TAP_API_TLS_*): a server certificate chain and
 * key, and the CA a client certificate must chain to (mTLS).
 */
export function readTlsFiles(env: NodeJS.ProcessEnv, group: TlsFilesSetting, problems: string[]): ApiTls | undefined {
  const { cert: certName, key: keyName, clientCa: caName } = group;
  const [certSet, keySet, caSet] = [certName, keyName, caName].map((name) => Boolean(env[name]));
  if (!certSet && !keySet) {
    if (caSet) problems.push(`${caName} needs ${certName} and ${keyName} (the server side of TLS)`);
    return undefined;
  }
  if (certSet !== keySet) {
    problems.push(`${certName} and ${keyName} go together (PEM certificate chain and its private key)`);
    return undefined;
  }
  const cert = readFile(env, certName, problems);
  const key = readFile(env, keyName, problems);
  const clientCa = readFile(env, caName, problems);
  return cert && key ? { cert, key, clientCa } : undefined;
}

/** `idpClients`: when the caller has read TOKEN_TAP_IDP_CONFIG already (so its problems are listed once). */
export function readTokenVaultConfig(env: NodeJS.ProcessEnv, flags: TokenVaultFlags, problems: string[], idpClients?: IdpClients): TokenVaultConfig {
  const listenText = flags.apiListen ?? readText(env, settings.API_LISTEN);
  let listen: HostPort | undefined;
  if (listenText.trim().toLowerCase() !== 'off') {
    try {
      listen = parseHostPort(listenText, '--api-listen (TOKEN_TAP_API_LISTEN)');
    } catch (error) {
      problems.push(`${asError(error).message}, or "off"`);
    }
  }
  const tls = readTlsFiles(env, settings.API_TLS, problems);
  // The API answers with tokens and takes API keys: beyond loopback, only over TLS unless asked for.
  const allowInsecure = readFlag(env, settings.ALLOW_INSECURE_API, problems);
  const tlsSet = Boolean(env[settings.API_TLS.cert] && env[settings.API_TLS.key]);
  if (listen && !isLoopbackOnly(listen) && !tlsSet && !allowInsecure) {
    problems.push(
      `--api-listen (TOKEN_TAP_API_LISTEN) ${formatHostPort(listen)} is reachable from other machines and the TokenVault API would send tokens and API keys in clear: ` +
        'set TOKEN_TAP_API_TLS_CERT and TOKEN_TAP_API_TLS_KEY (and _CLIENT_CA for mTLS), listen on 127.0.0.1:PORT, ' +
        'or, only on a network you trust (a container network of its own), set TOKEN_TAP_ALLOW_INSECURE_API=true',
    );
  }
  const retention: RetentionPolicy = {
    grantsOlderThanMs: readDuration(env, settings.GRANT_RETENTION, problems),
    eventsOlderThanMs: readDuration(env, settings.EVENT_RETENTION, problems),
  };
  const purgeIntervalMs = readDuration(env, settings.PURGE_INTERVAL, problems);
  if (purgeIntervalMs !== undefined && retention.grantsOlderThanMs === undefined && retention.eventsOlderThanMs === undefined) {
    problems.push('TOKEN_TAP_PURGE_INTERVAL is set but there is nothing to purge: set TOKEN_TAP_GRANT_RETENTION and/or TOKEN_TAP_EVENT_RETENTION');
  }
  const fault = readSet(env, settings.FAULT_INJECTION);
  if (fault !== undefined && !(REFRESH_FAULTS as readonly string[]).includes(fault)) {
    problems.push(`TOKEN_TAP_FAULT_INJECTION is for tests; known values: ${REFRESH_FAULTS.join(', ')}`);
  } else if (fault !== undefined && env.NODE_ENV !== 'test') {
    // It crashes the sidecar on every refresh: never by a stray variable in production.
    problems.push('TOKEN_TAP_FAULT_INJECTION works only with NODE_ENV=test; unset it');
  }
  return {
    listen,
    tls,
    allowInsecure,
    faultInjection: fault as RefreshFault | undefined,
    autoRefreshSeconds: readInteger(env, settings.API_AUTO_REFRESH_SECONDS, problems),
    poolSize: readInteger(env, settings.API_PG_POOL_SIZE, problems),
    refreshApplyWindowMs: readInteger(env, settings.REFRESH_APPLY_WINDOW_MS, problems),
    postgres: readPostgresTimeouts(env, 'TOKEN_TAP_API_PG', problems),
    idpClients: idpClients ?? loadIdpClients(env, problems),
    retention,
    purgeIntervalMs,
    auditRelaxedCommit: readFlag(env, settings.AUDIT_RELAXED_COMMIT, problems),
  };
}
