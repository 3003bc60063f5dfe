// Trade a signed-in user's Okta token for that user's upstream token at token-tap's token exchange
// (RFC 8693, docs/token-exchange.md), with a kept OAuth library: openid-client 6's
// genericGrantRequest. A service that serves a user's request holds that user's Okta access token
// already (the Authorization header it was called with); the API key, made with the operation
// `exchange` and the IdP, is its client credentials: client_id the key's id (the 16 hex digits
// after `ttk_`), client_secret the whole key. (test/integration/example-token-exchange.test.ts runs
// this file against a real sidecar.)
//
//   TOKEN_TAP_API_KEY=ttk_... OKTA_TOKEN=eyJ... \
//     node dist/examples/token-exchange.js https://token-tap.token-tap.svc:8444/oauth2/token entra
//
// Secrets come from the environment, not the command line (where other users of the machine see
// them). A private CA for the exchange's certificate: NODE_EXTRA_CA_CERTS=/path/ca.crt.
import * as client from 'openid-client';
import { fileURLToPath } from 'node:url';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
export const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';

export interface ExchangeRequest {
  /** The exchange's token endpoint, https://<host>:<port>/oauth2/token. */
  endpoint: string;
  /** ttk_<16 hex>_<secret>: a key with the `exchange` operation and this IdP. */
  apiKey: string;
  /** The user's Okta access token (or, with subjectTokenType ID_TOKEN, their Okta id_token). */
  oktaToken: string;
  /** The token-tap IdP name (the Envoy route's), e.g. entra. */
  idp: string;
  subjectTokenType?: typeof ACCESS_TOKEN | typeof ID_TOKEN;
  /** ACCESS_TOKEN (default): the upstream access token, refreshed first when about to expire; ID_TOKEN: the upstream id_token. */
  requestedTokenType?: typeof ACCESS_TOKEN | typeof ID_TOKEN;
}

/** The client_id of an API key: its id, the 16 hex digits after `ttk_`. */
export function clientIdOf(apiKey: string): string {
  const match = /^ttk_([0-9a-f]{16})_/.exec(apiKey);
  if (!match) throw new Error('TOKEN_TAP_API_KEY is not a token-tap API key (ttk_<16 hex digits>_<secret>)');
  return match[1]!;
}

export async function exchangeToken(request: ExchangeRequest): Promise<client.TokenEndpointResponse> {
  const endpoint = new URL(request.endpoint);
  // No discovery: the endpoint is all the client needs (the issuer is only a name here).
  const config = new client.Configuration(
    { issuer: endpoint.origin, token_endpoint: endpoint.href },
    clientIdOf(request.apiKey),
    undefined,
    client.ClientSecretBasic(request.apiKey),
  );
  // Plain HTTP only to a sidecar on this machine (the exchange itself refuses it beyond loopback).
  if (endpoint.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(endpoint.hostname)) client.allowInsecureRequests(config);
  return client.genericGrantRequest(config, TOKEN_EXCHANGE, {
    subject_token: request.oktaToken,
    subject_token_type: request.subjectTokenType ?? ACCESS_TOKEN,
    audience: request.idp,
    requested_token_type: request.requestedTokenType ?? ACCESS_TOKEN,
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [endpoint = 'https://127.0.0.1:8444/oauth2/token', idp = 'entra'] = process.argv.slice(2);
  try {
    const answer = await exchangeToken({ endpoint, apiKey: process.env.TOKEN_TAP_API_KEY ?? '', oktaToken: process.env.OKTA_TOKEN ?? '', idp });
    // A real service uses answer.access_token (as a Bearer token at the upstream API); never log it.
    // Not even its start: an opaque token (Google's ya29.) has no harmless header to show.
    process.stdout.write(
      `${idp}: upstream access token received, ${answer.access_token.length} characters (${answer.token_type}, expires in ${answer.expires_in ?? '?'} s, scope ${answer.scope ?? 'unknown'})\n`,
    );
  } catch (error) {
    // invalid_grant: no captured login for this user at this IdP; unauthorized_client: the key lacks `exchange`;
    // invalid_target: the key may not use this IdP; temporarily_unavailable: try again (Retry-After).
    const { error: code, error_description: description } = error as { error?: string; error_description?: string };
    process.stderr.write(
      `token exchange refused: ${code ?? (error instanceof Error ? error.message : String(error))}${description ? `: ${description}` : ''}\n`,
    );
    process.exitCode = 1;
  }
}
