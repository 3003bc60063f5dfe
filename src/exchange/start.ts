// The token exchange assembled from what the sidecar hands it (sidecar.ts: the TokenVault API's
// pool, store, refresher and audit logs; no pool is made here): the subject-token verifier with its
// own key cache, the operation, API-key client authentication, and the listener.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ApiKeyRepository } from '../api/api-keys.js';
import { Authenticator } from '../api/auth.js';
import type { ExchangeSettings } from '../config/exchange.js';
import { TokenExchange } from '../operations/exchange.js';
import type { GrantRefresher } from '../operations/refresh.js';
import { SubjectTokenVerifier } from '../operations/subject-token.js';
import type { AccessEventLog } from '../store/access-events.js';
import type { GrantStore } from '../store/grants.js';
import { startExchangeServer, type ExchangeServer } from './server.js';

export interface TokenExchangeParts {
  pool: pg.Pool;
  store: GrantStore;
  refresher: GrantRefresher;
  /** Durable rows of authenticated requests, and relaxed summary rows of refused ones. */
  audit: AccessEventLog;
  refusalAudit: AccessEventLog;
  /** Least time between two fetches of one authorization server's keys (TOKEN_TAP_JWKS_COOLDOWN_MS). */
  keysCooldownMs: number;
  refusalSummaryMs: number;
  logger: Logger;
  registry: Registry;
}

/**
 * The exchange answers one token of a grant: a grant it reads by subject opens each sealed field
 * when first read (its errors then surface inside the operation, answered and audited `internal`
 * as before). Email candidates are opened whole: their claims are all read.
 */
function exchangeReads(store: GrantStore): Pick<GrantStore, 'findGrant' | 'findEmailCandidates'> {
  return {
    findGrant: (idp, subject) => store.findGrant(idp, subject, { openWhenRead: true }),
    findEmailCandidates: (idp, emails, options) => store.findEmailCandidates(idp, emails, options),
  };
}

export function startTokenExchange(settings: ExchangeSettings, parts: TokenExchangeParts): Promise<ExchangeServer> {
  const { logger } = parts;
  const verifier = new SubjectTokenVerifier(settings.config.subjectIssuers, {
    cooldownMs: parts.keysCooldownMs,
    onFetch: ({ idp: source, ok, problem }) => {
      if (ok) logger.info({ source }, 'fetched the signing keys of an Okta authorization server');
      else logger.warn({ source, problem }, 'cannot fetch the signing keys of an Okta authorization server; its subject tokens are refused until they can be');
    },
  });
  return startExchangeServer({
    listen: settings.listen,
    tls: settings.tls,
    exchange: new TokenExchange({
      config: settings.config,
      store: exchangeReads(parts.store),
      refresher: parts.refresher,
      verifier,
      minTtlSeconds: settings.minTtlSeconds,
    }),
    authenticator: new Authenticator(new ApiKeyRepository(parts.pool)),
    audit: parts.audit,
    refusalAudit: parts.refusalAudit,
    logger,
    registry: parts.registry,
    refusalSummaryMs: parts.refusalSummaryMs,
    maxConnections: settings.maxConnections,
  });
}
