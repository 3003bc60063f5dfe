// What a refresh answers when it cannot refresh, what it does with tokens it cannot keep, and how it
// reports an IdP answer with fields over their bounds (the rules: operations/refresh.ts, operations/refresh-answer.ts). Messages and logs name fields,
// bounds, IdPs and users, never a token or a value.
import type { Logger } from 'pino';
import { IDP_CONFIG_ENV } from '../config/idp-file.js';
import { VaultError } from '../store/errors.js';
import type { Capture } from '../capture/types.js';
import type { GrantRecord } from '../store/grants.js';
import type { IdpCallError, IdpClient, IdpClients } from '../idp/client.js';
import type { RefreshAnswer, RefreshAnswerField } from './refresh-answer.js';
import type { KeptAnswer } from './refresh-kept.js';
import { describeError } from '../lib/error-description.js';

/** The IdP client for a grant, or why it cannot be refreshed. */
export function clientFor(clients: IdpClients, grant: GrantRecord): IdpClient {
  const { idp, subject } = grant;
  if (!grant.refreshToken) {
    throw new VaultError(
      `grant (${idp}, ${subject}) has no refresh token: the IdP issued none (many need an offline_access scope, or a setting, to issue one), ` +
        'or a refresh answer that replaced it was set aside (token-tap captures quarantined)',
      'failed_precondition',
    );
  }
  const client = clients.get(idp);
  if (!client) {
    throw new VaultError(
      `no client credentials for IdP "${idp}": add it to the file named by ${IDP_CONFIG_ENV} (token_url, client_id, client_secret_env)`,
      'failed_precondition',
    );
  }
  // A refresh token works only for the client it was issued to.
  if (grant.clientId && grant.clientId !== client.clientId) {
    throw new VaultError(
      `grant (${idp}, ${subject}) was issued to client "${grant.clientId}", but ${IDP_CONFIG_ENV} names client "${client.clientId}" for IdP "${idp}": use the client Okta uses`,
      'failed_precondition',
    );
  }
  return client;
}

/** An IdP that refused the refresh (not invalid_grant) or could not be reached. */
export function idpFailure(idp: string, error: IdpCallError): VaultError {
  return error.kind === 'unavailable'
    ? new VaultError(`${error.message}; try again`, 'unavailable', { cause: error })
    : new VaultError(`${error.message}; check the client for IdP "${idp}" in ${IDP_CONFIG_ENV}`, 'failed_precondition', { cause: error });
}

/** Tokens obtained for a grant revoked or deleted meanwhile are revoked at the IdP (best effort). */
export async function revokeUnused(client: IdpClient, refreshed: Capture, logger: Logger | undefined): Promise<void> {
  if (!client.canRevoke) return;
  const tokens = [
    ['refresh_token', refreshed.tokens?.refreshToken],
    ['access_token', refreshed.tokens?.accessToken],
  ] as const;
  try {
    for (const [hint, token] of tokens) if (token) await client.revoke(token, hint);
  } catch (error) {
    logger?.warn({ idp: refreshed.idp, err: describeError(error) }, 'could not revoke the tokens of a refresh whose grant was revoked meanwhile');
  }
}

export function revokedError(idp: string, subject: string, why = 'it was revoked'): VaultError {
  return new VaultError(`grant (${idp}, ${subject}) is revoked (${why}): the user must sign in again`, 'failed_precondition');
}

/** A refresh whose answer was set aside (a token over its bound): FAILED_PRECONDITION naming the field and the quarantined capture. */
export function setAsideError(idp: string, subject: string, kept: KeptAnswer): VaultError {
  return new VaultError(
    `IdP "${idp}" answered the refresh of (${idp}, ${subject}) with ${kept.setAside!.detail}: the answer is set aside in the quarantine as capture ${kept.setAside!.quarantineId} ` +
      '(token-tap captures quarantined / retry), and the refresh token it replaced is no longer stored; the user must sign in again, or an operator retries that capture',
    'failed_precondition',
  );
}

export interface RefusalReport {
  idp: string;
  subject: string;
  logger: Logger | undefined;
  onFieldRefused: ((idp: string, field: RefreshAnswerField, action: 'dropped' | 'set_aside') => void) | undefined;
}

/** Logs (once per answer) and counts (once per field) the fields of an answer over their bounds. */
export function reportRefusedFields({ idp, subject, logger, onFieldRefused }: RefusalReport, answer: RefreshAnswer): void {
  if (answer.refused.length === 0) return;
  for (const { field } of answer.refused) onFieldRefused?.(idp, field, field === 'access_token' || field === 'refresh_token' ? 'set_aside' : 'dropped');
  const fields = answer.refused.map((entry) => entry.detail);
  if (answer.kind === 'set_aside') {
    logger?.error(
      { idp, subject, fields },
      'IdP answered the refresh with a token over its bound or not storable: the answer is set aside in the quarantine, not stored in the grant',
    );
  } else {
    logger?.warn(
      { idp, subject, fields },
      'IdP answered the refresh with fields over their bound or not storable: those are dropped (the grant keeps its own), the new tokens are stored',
    );
  }
}
