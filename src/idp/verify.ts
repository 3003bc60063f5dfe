// Verification before storage: a captured id_token is stored only when its signature verifies
// against the keys of the IdP's pinned issuer (never the token's own `iss`), and its claims pass
// id-token-checks.ts. It runs in the pump, on the capture thread, between the spool and Postgres:
// captures are durable before any key is fetched, and the ext_proc thread never waits on an IdP.
//
// Keys: one JWKS per IdP, from `jwks_uri` or the issuer's discovery document, kept in memory.
// An unknown `kid` refetches it, but never more often than once per cooldown, however many tokens
// name unknown keys. A token whose `kid` is missing from a JWKS fetched after the token was
// observed is rejected (IdPs publish a key before they sign with it); one observed after the
// last fetch waits in the spool for the next fetch. Keys that cannot be fetched (IdP down) make
// the capture wait too, up to maxWaitMs of its age, then it is recorded `unverified`
// (`jwks_unavailable`). Nothing here logs or throws a token, a claim value or an answer's body.
import type { CompactVerifyGetKey, CryptoKey, JSONWebKeySet } from 'jose';
import type { AuthorizationServer } from 'oauth4webapi';
import type { Capture } from '../capture/types.js';
import { isLoopbackUrl } from '../config/values.js';
import { limitedFetch, readLimited } from './http.js';
import { accessTokenMatchesAtHash, checkIdTokenClaims, type ClaimProblem } from './id-token-checks.js';
import { lazyImport } from './lazy-import.js';

/** What an id_token captured for an IdP must satisfy (from TOKEN_TAP_IDP_CONFIG, config/idp-file.ts). */
export interface IdpVerificationSettings {
  idp: string;
  /** Compared with `iss` as written; the JWKS is found from it, never from the token. */
  issuer: string;
  /** undefined: from the issuer's discovery document. */
  jwksUri: URL | undefined;
  /** Okta's client at the IdP: the id_token's `aud` (and `azp` when aud has several). */
  clientId: string;
  /** Per request to the IdP (discovery, JWKS). */
  timeoutMs: number;
}

// jose and oauth4webapi are imported on first use (a key fetch or a signature check): a sidecar
// with no pinned issuer never loads them, and is some MB smaller for it. A failed import fails the
// key fetch (captures wait, and are recorded unverified after maxWaitMs, like any JWKS outage).
const loadJose = lazyImport(() => import('jose'));
const loadOauth = lazyImport(() => import('oauth4webapi'));

/** Asymmetric signatures only: `none` and HMAC (a key the IdP shares with its clients) never verify. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
export const MAX_DOCUMENT_BYTES = 512 * 1024;
/** Keys older than this are refetched before use (a key the IdP withdrew stops verifying). */
const DEFAULT_MAX_AGE_MS = 10 * 60_000;

export type VerifyProblem =
  | ClaimProblem
  | 'no_id_token'
  | 'malformed'
  | 'alg_not_allowed'
  | 'unknown_key'
  | 'bad_signature'
  | 'jwks_unavailable';

export type Verdict =
  | { kind: 'verified' }
  | { kind: 'rejected'; reason: VerifyProblem }
  /** Not decidable yet: ask again at `retryAt` (epoch ms); `reason` is what it becomes if it never is. */
  | { kind: 'wait'; retryAt: number; reason: 'jwks_unavailable' | 'unknown_key' };

export interface KeyFetchObserver {
  (event: { idp: string; ok: boolean; problem?: string }): void;
}

interface KeySnapshot {
  lookup: CompactVerifyGetKey;
  /** When the fetch that got these keys started (epoch ms). */
  fetchedAt: number;
}

export interface IdpKeysOptions {
  cooldownMs: number;
  maxAgeMs?: number;
  now?: () => number;
  onFetch?: KeyFetchObserver;
}

function describeFetchError(error: unknown): string {
  if ((error as Error)?.name === 'TimeoutError' || (error as Error)?.name === 'AbortError') return 'timeout';
  const cause = (error as { cause?: { code?: string } }).cause;
  return cause?.code ?? (error as Error)?.name ?? 'error';
}

/** A small JSON document: https (or loopback http), no redirects, size-capped, timed out. */
async function fetchJson(url: URL, timeoutMs: number, what: string): Promise<unknown> {
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackUrl(url))) throw new Error(`${what} is not https`);
  let response: Response;
  try {
    response = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (error) {
    throw new Error(`${what}: ${describeFetchError(error)}`);
  }
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => undefined);
    throw new Error(`${what}: HTTP ${response.status}`);
  }
  // Streamed with the limit: an endless answer is cut off at MAX_DOCUMENT_BYTES, never read whole.
  const body = await readLimited(response, MAX_DOCUMENT_BYTES).catch(() => null);
  if (body === null) throw new Error(`${what}: answer cut off`);
  if (body === undefined) throw new Error(`${what}: answer over ${MAX_DOCUMENT_BYTES} bytes`);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error(`${what}: not JSON`);
  }
}

/** One IdP's signing keys: fetched on demand, at most once per cooldown. */
export class IdpKeys {
  private snapshot: KeySnapshot | undefined;
  private jwksUri: URL | undefined;
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private lastFailed = false;
  private inflight: Promise<void> | undefined;
  private readonly now: () => number;

  constructor(
    readonly settings: IdpVerificationSettings,
    private readonly options: IdpKeysOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.jwksUri = settings.jwksUri;
  }

  get keys(): KeySnapshot | undefined {
    return this.snapshot;
  }

  /** When the next fetch may start. */
  get nextFetchAt(): number {
    return this.lastAttempt + this.options.cooldownMs;
  }

  /** Fetches the keys unless a fetch started within the cooldown; joins one in flight. */
  async refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    if (this.now() < this.nextFetchAt) return;
    this.inflight = this.fetchKeys().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async fetchKeys(): Promise<void> {
    const startedAt = this.now();
    this.lastAttempt = startedAt;
    const { idp, timeoutMs } = this.settings;
    let jwksInvalid: (new (...args: never[]) => Error) | undefined;
    try {
      const { createLocalJWKSet, errors } = await loadJose();
      jwksInvalid = errors.JWKSInvalid;
      this.jwksUri ??= await this.discover();
      const lookup = createLocalJWKSet((await fetchJson(this.jwksUri, timeoutMs, 'jwks_uri')) as JSONWebKeySet);
      this.snapshot = { lookup, fetchedAt: startedAt };
      this.lastFailed = false;
      this.options.onFetch?.({ idp, ok: true });
    } catch (error) {
      // jose's JWKSInvalid and our own messages name no key material; nothing else is quoted.
      const problem = jwksInvalid && error instanceof jwksInvalid ? 'jwks_uri: not a JSON Web Key Set' : error instanceof Error ? error.message : 'the key fetch failed';
      this.lastFailed = true;
      this.options.onFetch?.({ idp, ok: false, problem });
    }
  }

  /** jwks_uri from `issuer/.well-known/openid-configuration`, whose `issuer` must be the pinned one. */
  private async discover(): Promise<URL> {
    const issuer = new URL(this.settings.issuer);
    const oauth = await loadOauth();
    let response: Response;
    try {
      response = await oauth.discoveryRequest(issuer, {
        algorithm: 'oidc',
        signal: AbortSignal.timeout(this.settings.timeoutMs),
        [oauth.allowInsecureRequests]: issuer.protocol === 'http:',
        [oauth.customFetch]: limitedFetch(MAX_DOCUMENT_BYTES, 'discovery'),
      });
    } catch (error) {
      if (/^discovery: answer over/.test((error as Error)?.message ?? '')) throw error;
      throw new Error(`discovery: ${describeFetchError(error)}`);
    }
    let metadata: AuthorizationServer;
    try {
      metadata = await oauth.processDiscoveryResponse(issuer, response);
    } catch {
      // Its errors carry the document as their cause: only the status is told.
      throw new Error(`discovery: not a discovery document for the pinned issuer (HTTP ${response.status})`);
    }
    if (metadata.issuer !== this.settings.issuer) throw new Error('discovery: issuer differs from the pinned issuer');
    if (typeof metadata.jwks_uri !== 'string') throw new Error('discovery: no jwks_uri');
    let url: URL;
    try {
      url = new URL(metadata.jwks_uri);
    } catch {
      throw new Error('discovery: jwks_uri is not a URL');
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackUrl(url))) throw new Error('discovery: jwks_uri is not https');
    return url;
  }

  /** Signature and claims of `idToken`, observed (through Envoy) at `observedAt`. */
  async verify(idToken: string, observedAt: Date): Promise<Verdict> {
    const observed = observedAt.getTime();
    if (!this.snapshot || this.now() - this.snapshot.fetchedAt > (this.options.maxAgeMs ?? DEFAULT_MAX_AGE_MS)) await this.refresh();
    // Keys that have gone stale but cannot be refetched are still the IdP's best word.
    let keys = this.snapshot;
    if (!keys) return { kind: 'wait', retryAt: this.nextFetchAt, reason: 'jwks_unavailable' };
    let signed = await verifySignature(idToken, keys.lookup);
    if (signed === 'unknown_key' && keys.fetchedAt < observed) {
      // The key may be newer than our copy of the set: fetch it again when the cooldown allows.
      await this.refresh();
      // Not refetched: the cooldown (an unknown kid, so far), or the IdP did not answer.
      if (this.snapshot === keys) return { kind: 'wait', retryAt: Math.max(this.nextFetchAt, this.now() + 1), reason: this.lastFailed ? 'jwks_unavailable' : 'unknown_key' };
      keys = this.snapshot!;
      signed = await verifySignature(idToken, keys.lookup);
    }
    if (typeof signed === 'string') return { kind: 'rejected', reason: signed };
    const problem = checkIdTokenClaims(signed, this.settings, observedAt);
    return problem ? { kind: 'rejected', reason: problem } : { kind: 'verified' };
  }
}

type SignatureResult = Record<string, unknown> | 'malformed' | 'alg_not_allowed' | 'unknown_key' | 'bad_signature';

/** The payload of a JWS the keys verify, as claims; or why not. */
export async function verifySignature(token: string, lookup: CompactVerifyGetKey): Promise<SignatureResult> {
  const { compactVerify, errors } = await loadJose();
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, lookup, { algorithms: ALGORITHMS }));
  } catch (error) {
    if (error instanceof errors.JWKSMultipleMatchingKeys) {
      // Several keys fit the header (no kid, or a reused one): the token is good if one verifies it.
      payload = new Uint8Array();
      let found = false;
      for await (const key of error as unknown as AsyncIterable<CryptoKey>) {
        try {
          ({ payload } = await compactVerify(token, key, { algorithms: ALGORITHMS }));
          found = true;
          break;
        } catch {
          continue;
        }
      }
      if (!found) return 'bad_signature';
    } else if (error instanceof errors.JWKSNoMatchingKey) return 'unknown_key';
    else if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return 'alg_not_allowed';
    else if (error instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature';
    else return 'malformed';
  }
  try {
    const claims: unknown = JSON.parse(new TextDecoder().decode(payload));
    return claims !== null && typeof claims === 'object' && !Array.isArray(claims) ? (claims as Record<string, unknown>) : 'malformed';
  } catch {
    return 'malformed';
  }
}

/** The pump's verification step (ingest/pump.ts's CaptureVerification). */
export interface BatchVerdict {
  /** The captures ready to be written (verified, refused, or not subject to verification), in batch order. */
  captures?: Capture[];
  /** Captures whose IdP's keys are not to be had yet: ask again at `retryAt`. */
  waiting?: Capture[];
  retryAt?: number;
}

export interface CaptureVerifierOptions {
  idps: ReadonlyMap<string, IdpVerificationSettings>;
  cooldownMs: number;
  /** How long a capture may wait for keys, from when it was observed. */
  maxWaitMs: number;
  now?: () => number;
  onFetch?: KeyFetchObserver;
  /** Called once per IdP seen with no issuer configured (its grants are stored unverified). */
  onUnconfigured?: (idp: string) => void;
}

function unverified(capture: Capture, reason: string): Capture {
  return { ...capture, outcome: 'unverified', verified: false, detail: reason };
}

export class CaptureVerifier {
  private readonly keys = new Map<string, IdpKeys>();
  private readonly unconfiguredSeen = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly options: CaptureVerifierOptions) {
    this.now = options.now ?? Date.now;
    for (const [idp, settings] of options.idps) this.keys.set(idp, new IdpKeys(settings, { cooldownMs: options.cooldownMs, now: this.now, ...(options.onFetch ? { onFetch: options.onFetch } : {}) }));
  }

  /** Each capture verified, rejected (`unverified`) or left as it was (IdPs without an issuer). */
  async verify(batch: readonly Capture[]): Promise<BatchVerdict> {
    const out: Capture[] = [];
    const waiting: Capture[] = [];
    let retryAt: number | undefined;
    for (const capture of batch) {
      // A refresh's answer (spooled as its outbox) came from the IdP's token endpoint to the
      // sidecar itself, over TLS; it carries its grant's verified flag already.
      if (capture.obtainedByRefresh) {
        out.push(capture);
        continue;
      }
      const keys = this.keys.get(capture.idp);
      if (!keys) {
        if (!this.unconfiguredSeen.has(capture.idp) && (capture.outcome === 'stored' || capture.outcome === 'no_subject')) {
          this.unconfiguredSeen.add(capture.idp);
          this.options.onUnconfigured?.(capture.idp);
        }
        out.push(capture);
        continue;
      }
      // Only captures that would write a grant are judged; errors and profiles write none.
      if (capture.outcome !== 'stored' && capture.outcome !== 'no_subject') {
        out.push(capture);
        continue;
      }
      const idToken = capture.tokens?.idToken;
      if (!idToken) {
        // An IdP with a pinned issuer answers Okta with an id_token (Okta requires one of OIDC IdPs).
        out.push(unverified(capture, 'no_id_token'));
        continue;
      }
      const verdict = await keys.verify(idToken, capture.observedAt);
      if (verdict.kind === 'verified') {
        // Loaded already: the signature was checked with it.
        const { decodeProtectedHeader } = await loadJose();
        const alg = (() => {
          try {
            return decodeProtectedHeader(idToken).alg;
          } catch {
            return undefined;
          }
        })();
        if (accessTokenMatchesAtHash(capture.tokens?.claims ?? {}, alg, capture.tokens?.accessToken)) out.push({ ...capture, verified: true });
        else out.push(unverified(capture, 'at_hash_mismatch'));
      }
      else if (verdict.kind === 'rejected') out.push(unverified(capture, verdict.reason));
      else if (this.now() - capture.observedAt.getTime() >= this.options.maxWaitMs) out.push(unverified(capture, verdict.reason));
      else {
        waiting.push(capture);
        retryAt = Math.min(retryAt ?? Number.POSITIVE_INFINITY, verdict.retryAt, capture.observedAt.getTime() + this.options.maxWaitMs);
      }
    }
    return retryAt === undefined ? { captures: out } : { captures: out, waiting, retryAt };
  }
}
