// The token exchange's listener and settings, read with the sidecar's config: its address (off by
// default), TLS (required beyond loopback, as the TokenVault API's), the file of accepted Okta
// authorization servers and providers, and how fresh an answered access token must be.
import { asError } from '../lib/errors.js';
import { EXCHANGE_CONFIG_ENV, loadExchangeConfig, type ExchangeConfig } from './exchange-file.js';
import * as settings from './settings.js';
import { readInteger } from './settings.js';
import { readTlsFiles, type ApiTls } from './token-vault.js';
import { formatHostPort, isLoopbackOnly, parseHostPort, type HostPort } from './values.js';

export interface ExchangeSettings {
  listen: HostPort;
  /** TOKEN_TAP_EXCHANGE_TLS_CERT/_KEY (and _CLIENT_CA for mTLS); undefined: plain HTTP on loopback. */
  tls: ApiTls | undefined;
  config: ExchangeConfig;
  /** The stored access token is refreshed first when it expires within this many seconds. */
  minTtlSeconds: number;
  /** Open connections the listener takes at most (TOKEN_TAP_EXCHANGE_MAX_CONNECTIONS). */
  maxConnections: number;
}

/** undefined when the listener is off (or anything is wrong: then `problems` says what). */
export function readExchangeSettings(env: NodeJS.ProcessEnv, listenFlag: string | undefined, problems: string[]): ExchangeSettings | undefined {
  const listenText = listenFlag ?? env[settings.EXCHANGE_LISTEN.name] ?? settings.EXCHANGE_LISTEN.default;
  if (listenText.trim().toLowerCase() === 'off') {
    const stray = [EXCHANGE_CONFIG_ENV, settings.EXCHANGE_TLS.cert, settings.EXCHANGE_TLS.key].filter((name) => env[name]);
    if (stray.length > 0)
      problems.push(
        `${stray.join(', ')} set but the token exchange listener is off: set --exchange-listen HOST:PORT (${settings.EXCHANGE_LISTEN.name}), or unset them`,
      );
    return undefined;
  }
  let listen: HostPort | undefined;
  try {
    listen = parseHostPort(listenText, `--exchange-listen (${settings.EXCHANGE_LISTEN.name})`);
  } catch (error) {
    problems.push(`${asError(error).message}, or "off"`);
  }
  const tls = readTlsFiles(env, settings.EXCHANGE_TLS, problems);
  const tlsSet = Boolean(env[settings.EXCHANGE_TLS.cert] && env[settings.EXCHANGE_TLS.key]);
  // Callers send API keys and Okta tokens, and get upstream tokens back: beyond loopback, TLS only.
  if (listen && !isLoopbackOnly(listen) && !tlsSet) {
    problems.push(
      `--exchange-listen (${settings.EXCHANGE_LISTEN.name}) ${formatHostPort(listen)} is reachable from other machines and the token exchange would send tokens and API keys in clear: ` +
        `set ${settings.EXCHANGE_TLS.cert} and ${settings.EXCHANGE_TLS.key}, or listen on 127.0.0.1:PORT`,
    );
  }
  const minTtlSeconds = readInteger(env, settings.EXCHANGE_MIN_TTL_SECONDS, problems);
  const maxConnections = readInteger(env, settings.EXCHANGE_MAX_CONNECTIONS, problems);
  const config = loadExchangeConfig(env, problems);
  return listen && config ? { listen, tls, config, minTtlSeconds, maxConnections } : undefined;
}
