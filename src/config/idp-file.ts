// The file named by TOKEN_TAP_IDP_CONFIG (YAML or JSON): the sidecar's own client credentials at
// each IdP, for refresh and revocation. Every problem is collected; secrets come only from the
// environment or a file, and no message quotes one.
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
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import { AUTH_METHODS, IdpClient, type AuthMethod, type IdpClients } from '../idp/client.js';

export const IDP_CONFIG_ENV = 'TOKEN_TAP_IDP_CONFIG';

const require = createRequire(import.meta.url);
const FIELDS = new Set(['token_url', 'client_id', 'client_secret_env', 'client_secret_file', 'revocation_url', 'auth_method', 'timeout_ms']);
const DEFAULT_TIMEOUT_MS = 10_000;

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
  if (!isIdpName(name)) problems.push(`${where}: IdP name must be ${IDP_NAME_RULE} (the name in the Envoy route)`);
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
