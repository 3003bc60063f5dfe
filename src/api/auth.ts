// Who is calling, and may they. Every TokenVault call presents an API key ("authorization:
// Bearer ttk_..."); with mTLS configured the client certificate is required as well, and its
// subject is recorded with the call.
import type * as grpc from '@grpc/grpc-js';
import { ALL, type ApiKeyRepository, type Operation } from './api-keys.js';
import type { OpenableGrantRow } from '../store/grants.js';
import { parseApiKey, secretMatches } from './api-key-token.js';
import { TokenTapError } from '../lib/errors.js';

export interface Caller {
  apiKeyId: string;
  name: string;
  idps: readonly string[];
  operations: readonly string[];
}

/** Refusals: outcome is the gRPC code's name; `presentedKeyId` is audited, never the secret. */
export class AccessDenied extends TokenTapError {
  override name = 'AccessDenied';
  declare readonly outcome: 'unauthenticated' | 'permission_denied';
  constructor(
    message: string,
    outcome: 'unauthenticated' | 'permission_denied',
    /** For the audit row; the caller's message stays generic. */
    readonly detail: string,
    readonly presentedKeyId?: string,
  ) {
    super(message, outcome, { exposable: true });
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

function presentedToken(metadata: grpc.Metadata): string | undefined {
  const values = metadata.get('authorization');
  if (values.length !== 1 || typeof values[0] !== 'string') return undefined;
  return BEARER.exec(values[0])?.[1];
}

export class Authenticator {
  constructor(private readonly keys: ApiKeyRepository) {}

  /**
   * Checks the presented key. With `prefetch`, the grant it names is read in the same query and
   * handed back unopened, for the caller to use once the key is also authorized.
   */
  async authenticate(metadata: grpc.Metadata, prefetch?: { idp: string; subject: string }): Promise<{ caller: Caller; grant?: OpenableGrantRow | undefined }> {
    return this.authenticateKey(presentedToken(metadata), prefetch);
  }

  /** Checks a presented API key (from gRPC metadata, or the token exchange's client credentials). */
  async authenticateKey(
    token: string | undefined,
    prefetch?: { idp: string; subject: string },
  ): Promise<{ caller: Caller; grant?: OpenableGrantRow | undefined }> {
    const refuse = (detail: string, keyId?: string): never => {
      throw new AccessDenied('a valid API key is required: send "authorization: Bearer ttk_..." (token-tap api-keys create)', 'unauthenticated', detail, keyId);
    };
    if (token === undefined) return refuse('no API key presented');
    const parts = parseApiKey(token);
    if (!parts) return refuse('malformed API key');
    const { key: stored, grant } = prefetch
      ? await this.keys.findWithGrant(parts.id, prefetch.idp, prefetch.subject)
      : { key: await this.keys.find(parts.id), grant: undefined };
    if (!secretMatches(parts.secret, stored?.secretHash)) return refuse(stored ? 'wrong secret for this API key id' : 'unknown API key id', parts.id);
    if (stored!.revokedAt) return refuse(`API key revoked at ${stored!.revokedAt.toISOString()}`, parts.id);
    return { caller: { apiKeyId: stored!.id, name: stored!.name, idps: stored!.idps, operations: stored!.operations }, grant };
  }
}

export function mayUseIdp(caller: Caller, idp: string): boolean {
  return caller.idps.includes(ALL) || caller.idps.includes(idp);
}

export function mayDo(caller: Caller, operation: Operation): boolean {
  return caller.operations.includes(ALL) || caller.operations.includes(operation);
}

/**
 * Throws PERMISSION_DENIED unless the key may do every operation on this IdP; ALL: on every IdP;
 * undefined: on the IdPs it is allowed (the caller then limits the work to those).
 */
export function authorize(caller: Caller, operations: readonly Operation[], idp: string | undefined): void {
  for (const operation of operations) {
    if (!mayDo(caller, operation)) {
      throw new AccessDenied(`API key "${caller.name}" may not ${operation}`, 'permission_denied', `operation ${operation} not allowed`);
    }
  }
  if (idp === undefined) return;
  if (idp === ALL ? !caller.idps.includes(ALL) : !mayUseIdp(caller, idp)) {
    const what = idp === ALL ? 'every IdP (this call names none)' : `IdP "${idp}"`;
    throw new AccessDenied(`API key "${caller.name}" may not use ${what}`, 'permission_denied', `IdP ${idp} not allowed`);
  }
}
