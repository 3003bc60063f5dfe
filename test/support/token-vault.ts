// The sidecar in process with its TokenVault API, a promise-returning API client, and a login
// whose real token response goes into the vault through the capture path.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadTokenVault } from '../../src/api/protocol.js';
import { captureFrom } from '../../src/capture/capture.js';
import type { Capture } from '../../src/capture/types.js';
import type { Sidecar } from '../../src/sidecar.js';
import { ApiKeyRepository, type Operation } from '../../src/api/api-keys.js';
import { startInProcessSidecar } from './in-process.js';
import { loginAsOkta, type OktaLogin } from './okta-client.js';
import type { TestIdp } from './oidc-idp.js';
import type { TestDatabase } from './postgres.js';

export interface VaultSidecar {
  sidecar: Sidecar;
  apiPort: number;
  /** Everything the sidecar logged (JSON lines, debug level). */
  logs(): string;
  close(): Promise<void>;
}

export function tempDir(label: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `token-tap-${label}-`));
}

/** Writes a TOKEN_TAP_IDP_CONFIG file for the test IdP under `name`; the secret goes in env `secretEnv`. */
export function idpConfigFile(idp: TestIdp, name: string, secretEnv: string, extra: Record<string, unknown> = {}): string {
  const file = path.join(tempDir('idp-config'), 'idps.yaml');
  const entry = { token_url: idp.tokenUrl, client_id: idp.clientId, client_secret_env: secretEnv, revocation_url: idp.revocationUrl, ...extra };
  writeFileSync(
    file,
    `idps:\n  ${name}:\n${Object.entries(entry)
      .map(([key, value]) => `    ${key}: ${JSON.stringify(value)}`)
      .join('\n')}\n`,
  );
  return file;
}

export async function startVaultSidecar(db: TestDatabase, env: Record<string, string>): Promise<VaultSidecar> {
  const running = await startInProcessSidecar({ DATABASE_URL: db.url, TOKEN_TAP_API_LISTEN: '127.0.0.1:0', ...env }, 'debug');
  const { sidecar } = running;
  if (!sidecar.vault.address) {
    await running.close(1_000);
    throw new Error(`the TokenVault API did not start:\n${running.log.text()}`);
  }
  return { sidecar, apiPort: sidecar.vault.address.port, logs: running.log.text, close: () => running.close(2_000) };
}

export type VaultMethod = 'GetGrant' | 'ListGrants' | 'RefreshGrant' | 'RevokeGrant' | 'DeleteSubject';

export interface VaultClient {
  /** `deadlineMs`: the call's gRPC deadline from now (default 15 s). */
  call<T = any>(method: VaultMethod, request: Record<string, unknown>, apiKey?: string, options?: { deadlineMs?: number }): Promise<T>;
  close(): void;
}

export function vaultClient(port: number, credentials = grpc.credentials.createInsecure(), options: grpc.ClientOptions = {}): VaultClient {
  const { Client } = loadTokenVault();
  const client = new Client(`127.0.0.1:${port}`, credentials, options) as grpc.Client & Record<string, (...args: any[]) => any>;
  return {
    call(method, request, apiKey, options = {}) {
      const metadata = new grpc.Metadata();
      if (apiKey !== undefined) metadata.set('authorization', `Bearer ${apiKey}`);
      return new Promise((resolve, reject) => {
        client[method]!.call(
          client,
          request,
          metadata,
          { deadline: Date.now() + (options.deadlineMs ?? 15_000) },
          (error: grpc.ServiceError | null, response: unknown) => (error ? reject(error) : resolve(response as any)),
        );
      });
    },
    close: () => client.close(),
  };
}

/** The gRPC status code a call ended with (OK when it succeeded). */
export async function statusOf(call: Promise<unknown>): Promise<grpc.status> {
  try {
    await call;
    return grpc.status.OK;
  } catch (error) {
    return (error as grpc.ServiceError).code;
  }
}

export async function createApiKey(db: TestDatabase, name: string, idps: string[], operations: Array<Operation | '*'>): Promise<{ id: string; token: string }> {
  const key = await new ApiKeyRepository(db.pool).create(name, idps, operations);
  return { id: key.id, token: key.token };
}

/**
 * Signs in at the test IdP as Okta does and writes the token response the IdP sent into the vault
 * through the capture path (captureFrom, then the store), as the sidecar would from Envoy.
 * `rewrite` may change the response JSON first (a shorter expires_in, say).
 */
export async function loginIntoVault(
  idp: TestIdp,
  sidecar: Sidecar,
  idpName: string,
  options: { loginHint?: string; rewrite?: (body: Record<string, unknown>) => void } = {},
): Promise<{ login: OktaLogin; capture: Capture }> {
  const login = await loginAsOkta(idp, idp.tokenUrl, { loginHint: options.loginHint });
  let body = login.received.body;
  if (options.rewrite) {
    const json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    options.rewrite(json);
    body = Buffer.from(JSON.stringify(json));
  }
  const capture = captureFrom(
    {
      idp: idpName,
      routeKind: 'token',
      subjectField: undefined,
      bearerToken: undefined,
      status: login.received.status,
      headers: new Map(login.received.headers.map(([name, value]) => [name.toLowerCase(), value])),
      body,
      bodyTruncated: false,
      complete: true,
      startedAt: Date.now(),
    },
    { maxDecodedBytes: 1024 * 1024 },
  );
  if (capture.outcome !== 'stored') throw new Error(`login was not captured: ${capture.outcome} ${capture.detail ?? ''}`);
  const { quarantined } = await sidecar.store.recordCaptures([capture]);
  if (quarantined.length > 0) throw new Error(`the store quarantined the login: ${quarantined[0]!.reason}`);
  return { login, capture };
}

/** GET the IdP's userinfo with an access token: the status says whether the token works. */
export async function userinfoStatus(idp: TestIdp, accessToken: string): Promise<number> {
  const response = await fetch(idp.userinfoUrl, { headers: { authorization: `Bearer ${accessToken}` } });
  await response.arrayBuffer();
  return response.status;
}
