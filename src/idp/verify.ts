// Verification before storage: a captured id_token is stored only when its signature verifies
// against the keys of the IdP's pinned issuer (never the token's own `iss`), and its claims pass
// id-token-checks.ts. It runs in the pump, on the capture thread, between the spool and Postgres:
// captures are durable before any key is fetched, and the ext_proc thread never waits on an IdP.
//
// Keys: one JWKS per IdP, from `jwks_uri` or the issuer's discovery document, kept in memory
// (jwks.ts). An unknown `kid` refetches it, but never more often than once per cooldown, however
// many tokens name unknown keys. A token whose `kid` is missing from a JWKS fetched after the token
// was observed is rejected (IdPs publish a key before they sign with it); one observed after the
// last fetch waits in the spool for the next fetch. Keys that cannot be fetched (IdP down) make
// the capture wait too, up to maxWaitMs of its age, then it is recorded `unverified`
// (`jwks_unavailable`). Nothing here logs or throws a token, a claim value or an answer's body.
import type { CompactVerifyGetKey, CryptoKey } from 'jose';
import type { Capture } from '../capture/types.js';
import { accessTokenMatchesAtHash, checkIdTokenClaims, type ClaimProblem } from './id-token-checks.js';
import { ASYMMETRIC_ALGORITHMS, JwksCache, type IssuerKeys, type JwksCacheOptions, type KeyFetchObserver } from './jwks.js';
import { lazyImport } from '../lib/lazy-import.js';

export { MAX_DOCUMENT_BYTES, type KeyFetchObserver } from './jwks.js';

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

// jose is imported on first use (a signature check), as in jwks.ts.
const loadJose = lazyImport(() => import('jose'));

const ALGORITHMS = [...ASYMMETRIC_ALGORITHMS];

export type VerifyProblem = ClaimProblem | 'no_id_token' | 'malformed' | 'alg_not_allowed' | 'unknown_key' | 'bad_signature' | 'jwks_unavailable';

export type Verdict =
  | { kind: 'verified' }
  | { kind: 'rejected'; reason: VerifyProblem }
  /** Not decidable yet: ask again at `retryAt` (epoch ms); `reason` is what it becomes if it never is. */
  | { kind: 'wait'; retryAt: number; reason: 'jwks_unavailable' | 'unknown_key' };

/** One IdP's keys (from a cache shared by the IdPs of one verifier, or its own) and its id_tokens' checks. */
export class IdpKeys {
  private readonly keys: IssuerKeys;
  private readonly now: () => number;

  constructor(
    readonly settings: IdpVerificationSettings,
    keysFrom: JwksCache | JwksCacheOptions,
  ) {
    const cache = keysFrom instanceof JwksCache ? keysFrom : new JwksCache(keysFrom);
    this.now = cache.now;
    this.keys = cache.keysOf({ name: settings.idp, issuer: settings.issuer, jwksUri: settings.jwksUri, timeoutMs: settings.timeoutMs });
  }

  /** Fetches the keys unless a fetch started within the cooldown; joins one in flight. */
  refresh(): Promise<void> {
    return this.keys.refresh();
  }

  /** Signature and claims of `idToken`, observed (through Envoy) at `observedAt`. */
  async verify(idToken: string, observedAt: Date): Promise<Verdict> {
    const observed = observedAt.getTime();
    let keys = await this.keys.usable();
    if (!keys) return { kind: 'wait', retryAt: this.keys.nextFetchAt, reason: 'jwks_unavailable' };
    let signed = await verifySignature(idToken, keys.lookup);
    if (signed === 'unknown_key' && keys.fetchedAt < observed) {
      // The key may be newer than our copy of the set: fetch it again when the cooldown allows.
      const newer = await this.keys.newerThan(keys);
      // Not refetched: the cooldown (an unknown kid, so far), or the IdP did not answer.
      if (!newer)
        return {
          kind: 'wait',
          retryAt: Math.max(this.keys.nextFetchAt, this.now() + 1),
          reason: this.keys.lastFetchFailed ? 'jwks_unavailable' : 'unknown_key',
        };
      keys = newer;
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
          // not this key: try the next
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

/**
 * A capture this step does not verify, as it goes on: never `verified`, whatever the record it was
 * read from claims (a spool or quarantine record is no proof; only a check made here is).
 */
function notVerifiedHere(capture: Capture): Capture {
  return capture.verified === false ? capture : { ...capture, verified: false };
}

export class CaptureVerifier {
  private readonly keys = new Map<string, IdpKeys>();
  private readonly unconfiguredSeen = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly options: CaptureVerifierOptions) {
    this.now = options.now ?? Date.now;
    // One cache: IdPs that share a key set URL share its fetches.
    const cache = new JwksCache({ cooldownMs: options.cooldownMs, now: this.now, ...(options.onFetch ? { onFetch: options.onFetch } : {}) });
    for (const [idp, settings] of options.idps) this.keys.set(idp, new IdpKeys(settings, cache));
  }

  /** Each capture verified, rejected (`unverified`) or left as it was but not verified (IdPs without an issuer). */
  async verify(batch: readonly Capture[]): Promise<BatchVerdict> {
    const out: Capture[] = [];
    const waiting: Capture[] = [];
    let retryAt: number | undefined;
    for (const capture of batch) {
      // A refresh's answer (spooled as its outbox) came from the IdP's token endpoint to the
      // sidecar itself, over TLS; it carries its grant's verified flag, which the writer ANDs with
      // the stored grant's under its row lock (store/grant-upsert.ts): it can never make a grant verified.
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
        out.push(notVerifiedHere(capture));
        continue;
      }
      // Only captures that would write a grant are judged; errors and profiles write none (a
      // profile links a held grant as unverified).
      if (capture.outcome !== 'stored' && capture.outcome !== 'no_subject') {
        out.push(notVerifiedHere(capture));
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
      } else if (verdict.kind === 'rejected') out.push(unverified(capture, verdict.reason));
      else if (this.now() - capture.observedAt.getTime() >= this.options.maxWaitMs) out.push(unverified(capture, verdict.reason));
      else {
        waiting.push(capture);
        retryAt = Math.min(retryAt ?? Number.POSITIVE_INFINITY, verdict.retryAt, capture.observedAt.getTime() + this.options.maxWaitMs);
      }
    }
    return retryAt === undefined ? { captures: out } : { captures: out, waiting, retryAt };
  }
}
