// Client authentication of the token exchange (RFC 6749 §2.3): the client_id is an API key's id
// (the 16 hex digits after `ttk_`) and the client_secret the whole key, checked by the TokenVault
// API's Authenticator (hash compared in constant time, revocation). Why a client was refused goes
// to the refusal summary, never to the client.
import { AccessDenied, type Authenticator, type Caller } from '../api/auth.js';
import type { ClientCredentials } from './form.js';

export type ClientCheck = { ok: true; caller: Caller } | { ok: false; reason: string; apiKeyId?: string };

const KEY_ID = /^[0-9a-f]{16}$/;

export async function authenticateClient(authenticator: Pick<Authenticator, 'authenticateKey'>, credentials: ClientCredentials): Promise<ClientCheck> {
  const { clientId, clientSecret } = credentials;
  if (!KEY_ID.test(clientId)) return { ok: false, reason: 'client_id is not an API key id (16 hex digits)' };
  // The id inside the key must be the one named: a key is never used under another key's id.
  if (!clientSecret.startsWith(`ttk_${clientId}_`)) return { ok: false, reason: 'client_secret is not the API key client_id names', apiKeyId: clientId };
  try {
    const { caller } = await authenticator.authenticateKey(clientSecret);
    return { ok: true, caller };
  } catch (error) {
    if (error instanceof AccessDenied) return { ok: false, reason: error.detail, apiKeyId: clientId };
    throw error;
  }
}
