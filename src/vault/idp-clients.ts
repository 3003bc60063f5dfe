// The sidecar as an OAuth client of each IdP, for refresh (RFC 6749 section 6) and revocation
// (RFC 7009). Client credentials come from the sidecar's own config file (TOKEN_TAP_IDP_CONFIG),
// never from Okta's requests. Secrets are read from the environment or a file, held in private
// fields (so no logger or JSON.stringify reaches them), and never appear in a message.
//
//   idps:
//     acme:
//       token_url: https://acme.example/oauth2/token
//       client_id: 0oa1example
//       client_secret_env: ACME_CLIENT_SECRET   # or client_secret_file: /run/secrets/acme
//       revocation_url: https://acme.example/oauth2/revoke   # optional
//       auth_method: client_secret_basic                     # or client_secret_post
//       timeout_ms: 10000                                    # optional
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { readTokenResponse } from '../capture/token-response.js';
import type { TokenSet } from '../capture/types.js';

export const IDP_CONFIG_ENV = 'TOKEN_TAP_IDP_CONFIG';

const require = createRequire(import.meta.url);

type AuthMethod = 'client_secret_basic' | 'client_secret_post';
const AUTH_METHODS: readonly AuthMethod[] = ['client_secret_basic', 'client_secret_post'];
const FIELDS = new Set(['token_url', 'client_id', 'client_secret_env', 'client_secret_file', 'revocation_url', 'auth_method', 'timeout_ms']);
/** An IdP name as the vault accepts it (config keys, API key scopes): 1-64 of [A-Za-z0-9_.-]. */
export const IDP_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_RESPONSE_BYTES = 1024 * 1024;

/** Why a call to the IdP did not give tokens. Messages name the IdP and the OAuth error code only. */
export class IdpCallError extends Error {
  override name = 'IdpCallError';
  constructor(
    message: string,
    /** unavailable: network, timeout, 5xx, 429 (retry later); refused: the IdP said no. */
    readonly kind: 'unavailable' | 'refused',
    /** The OAuth error code (invalid_grant, invalid_client, ...) when the IdP sent one. */
    readonly errorCode?: string,
  ) {
    super(message);
  }
}

export interface IdpClientSettings {
  idp: string;
  tokenUrl: URL;
  revocationUrl: URL | undefined;
  clientId: string;
  authMethod: AuthMethod;
  timeoutMs: number;
}

export class IdpClient {
  readonly #secret: string;

  constructor(
    readonly settings: IdpClientSettings,
    secret: string,
  ) {
    this.#secret = secret;
  }

  get idp(): string {
    return this.settings.idp;
  }

  get clientId(): string {
    return this.settings.clientId;
  }

  get canRevoke(): boolean {
    return this.settings.revocationUrl !== undefined;
  }

  /** grant_type=refresh_token at the token endpoint. Throws IdpCallError. */
  async refresh(refreshToken: string): Promise<TokenSet> {
    const { status, body } = await this.post(this.settings.tokenUrl, { grant_type: 'refresh_token', refresh_token: refreshToken }, 'token endpoint');
    const response = readTokenResponse(status, body);
    if (response.kind === 'tokens') return response.tokens;
    if (status >= 500 || status === 429) throw new IdpCallError(`IdP "${this.idp}" token endpoint answered HTTP ${status}`, 'unavailable');
    if (response.kind === 'idp_error') {
      throw new IdpCallError(`IdP "${this.idp}" refused the refresh: ${response.errorCode}`, 'refused', response.errorCode);
    }
    throw new IdpCallError(`IdP "${this.idp}" token endpoint answered HTTP ${status} with a body that is not a token response (${response.detail})`, 'unavailable');
  }

  /**
   * RFC 7009: revoke one token. A 200 means done (also for a token the IdP no longer knows);
   * unsupported_token_type means the IdP does not revoke that kind, which is not a failure.
   */
  async revoke(token: string, hint: 'access_token' | 'refresh_token'): Promise<'revoked' | 'unsupported'> {
    if (!this.settings.revocationUrl) throw new Error(`IdP "${this.idp}" has no revocation_url`);
    const { status, body } = await this.post(this.settings.revocationUrl, { token, token_type_hint: hint }, 'revocation endpoint');
    if (status === 200) return 'revoked';
    if (status >= 500 || status === 429) throw new IdpCallError(`IdP "${this.idp}" revocation endpoint answered HTTP ${status}`, 'unavailable');
    const answer = readTokenResponse(status, body);
    const code = answer.kind === 'idp_error' ? answer.errorCode : `http_${status}`;
    if (code === 'unsupported_token_type') return 'unsupported';
    throw new IdpCallError(`IdP "${this.idp}" refused the revocation: ${code}`, 'refused', code);
  }

  private async post(url: URL, form: Record<string, string>, what: string): Promise<{ status: number; body: Buffer }> {
    const params = new URLSearchParams(form);
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (this.settings.authMethod === 'client_secret_basic') {
      // RFC 6749 2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
      const encode = (value: string) => new URLSearchParams({ v: value }).toString().slice(2);
      headers.authorization = `Basic ${Buffer.from(`${encode(this.clientId)}:${encode(this.#secret)}`).toString('base64')}`;
    } else {
      params.set('client_id', this.clientId);
      params.set('client_secret', this.#secret);
    }
    let response: Response;
    try {
      response = await fetch(url, { method: 'POST', headers, body: params.toString(), redirect: 'error', signal: AbortSignal.timeout(this.settings.timeoutMs) });
    } catch (error) {
      const reason = (error as Error).name === 'TimeoutError' ? `no answer within ${this.settings.timeoutMs} ms` : describeFetchError(error);
      throw new IdpCallError(`IdP "${this.idp}" ${what} cannot be reached: ${reason}`, 'unavailable');
    }
    const body = await readLimited(response, MAX_RESPONSE_BYTES).catch(() => undefined);
    if (!body) throw new IdpCallError(`IdP "${this.idp}" ${what} answer could not be read (cut off, or over ${MAX_RESPONSE_BYTES} bytes)`, 'unavailable');
    return { status: response.status, body };
  }
}

function describeFetchError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
}

async function readLimited(response: Response, limit: number): Promise<Buffer | undefined> {
  if (!response.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > limit) return undefined;
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/** The configured IdP clients by IdP name; empty when TOKEN_TAP_IDP_CONFIG is not set. */
export type IdpClients = ReadonlyMap<string, IdpClient>;

function isLoopback(url: URL): boolean {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

function readUrl(value: unknown, where: string, problems: string[]): URL | undefined {
  if (typeof value !== 'string' || value === '') {
    problems.push(`${where} must be a URL`);
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    problems.push(`${where} is not a URL`);
    return undefined;
  }
  // The client secret travels in this request; plain http is only allowed on this machine.
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url))) {
    problems.push(`${where} must be https (plain http only for 127.0.0.1/localhost)`);
    return undefined;
  }
  return url;
}

function readSecret(name: string, entry: Record<string, unknown>, where: string, env: NodeJS.ProcessEnv, problems: string[]): string | undefined {
  const fromEnv = entry.client_secret_env;
  const fromFile = entry.client_secret_file;
  if ((fromEnv === undefined) === (fromFile === undefined)) {
    problems.push(`${where}: give exactly one of client_secret_env (an environment variable name) or client_secret_file (a path)`);
    return undefined;
  }
  if (fromEnv !== undefined) {
    if (typeof fromEnv !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(fromEnv)) {
      problems.push(`${where}.client_secret_env must be an environment variable name`);
      return undefined;
    }
    const secret = env[fromEnv];
    if (!secret) problems.push(`${where}: environment variable ${fromEnv} (client_secret_env of IdP "${name}") is not set`);
    return secret || undefined;
  }
  if (typeof fromFile !== 'string' || fromFile === '') {
    problems.push(`${where}.client_secret_file must be a path`);
    return undefined;
  }
  try {
    const secret = readFileSync(fromFile, 'utf8').replace(/\r?\n$/, '');
    if (secret === '') problems.push(`${where}: ${fromFile} (client_secret_file of IdP "${name}") is empty`);
    return secret || undefined;
  } catch (error) {
    problems.push(`${where}: cannot read client_secret_file ${fromFile} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
}

function readIdp(name: string, value: unknown, file: string, env: NodeJS.ProcessEnv, problems: string[]): IdpClient | undefined {
  const where = `${file}: idps.${name}`;
  const before = problems.length;
  if (!IDP_NAME_PATTERN.test(name)) problems.push(`${where}: IdP name must be 1-64 of [A-Za-z0-9_.-] (the name in the Envoy route)`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${where} must be a mapping with token_url, client_id and client_secret_env or client_secret_file`);
    return undefined;
  }
  const entry = value as Record<string, unknown>;
  if ('client_secret' in entry) problems.push(`${where}: client_secret must not be written in the file; name an environment variable (client_secret_env) or a file (client_secret_file)`);
  for (const field of Object.keys(entry)) {
    if (!FIELDS.has(field) && field !== 'client_secret') problems.push(`${where}: unknown field "${field}" (known: ${[...FIELDS].join(', ')})`);
  }
  const tokenUrl = readUrl(entry.token_url, `${where}.token_url`, problems);
  const revocationUrl = entry.revocation_url === undefined ? undefined : readUrl(entry.revocation_url, `${where}.revocation_url`, problems);
  const clientId = entry.client_id;
  if (typeof clientId !== 'string' || clientId === '') problems.push(`${where}.client_id must be a non-empty string`);
  const authMethod = (entry.auth_method ?? 'client_secret_basic') as AuthMethod;
  if (!AUTH_METHODS.includes(authMethod)) problems.push(`${where}.auth_method must be one of ${AUTH_METHODS.join(', ')}`);
  const timeoutMs = entry.timeout_ms ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 120_000) {
    problems.push(`${where}.timeout_ms must be an integer from 1 to 120000`);
  }
  const secret = readSecret(name, entry, where, env, problems);
  if (problems.length > before || !tokenUrl || !secret) return undefined;
  return new IdpClient({ idp: name, tokenUrl, revocationUrl, clientId: clientId as string, authMethod, timeoutMs: timeoutMs as number }, secret);
}

/** Reads the file named by TOKEN_TAP_IDP_CONFIG (YAML or JSON). Every problem is collected. */
export function loadIdpClients(env: NodeJS.ProcessEnv, problems: string[]): IdpClients {
  const clients = new Map<string, IdpClient>();
  const file = env[IDP_CONFIG_ENV];
  if (!file) return clients;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    problems.push(`${IDP_CONFIG_ENV}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return clients;
  }
  // JSON is YAML, so one parser reads both. Parser messages quote the text around an error, which
  // could be a secret someone pasted in; only the position is reported.
  // Loaded only when there is a file to read: the YAML library is kept off the sidecar's start-up path.
  const { parseDocument } = require('yaml') as typeof import('yaml');
  const document = parseDocument(text);
  if (document.errors.length > 0) {
    for (const error of document.errors) {
      const position = error.linePos?.[0];
      problems.push(`${file}: not valid YAML or JSON${position ? ` at line ${position.line}, column ${position.col}` : ''} (${error.code})`);
    }
    return clients;
  }
  const root: unknown = document.toJS();
  const idps = (root as { idps?: unknown } | null)?.idps;
  if (idps === null || typeof idps !== 'object' || Array.isArray(idps)) {
    problems.push(`${file}: expected a mapping "idps:" of IdP name to { token_url, client_id, client_secret_env | client_secret_file, revocation_url? }`);
    return clients;
  }
  for (const field of Object.keys(root as object)) {
    if (field !== 'idps') problems.push(`${file}: unknown top-level field "${field}" (only "idps")`);
  }
  for (const [name, value] of Object.entries(idps as Record<string, unknown>)) {
    const client = readIdp(name, value, file, env, problems);
    if (client) clients.set(name, client);
  }
  return clients;
}
