// Subject tokens verified lately, so a service that presents the same token again (one token per
// user and session, many exchanges) is not verified again: RS256 verification and JWT decoding were
// the exchange's largest CPU step after Postgres (bench/RESULTS.md, issue 25). Pure: the clock is
// the caller's.
//
// No check is weaker than a full verification: an entry is found only by the SHA-256 of the whole
// token and the type it was verified as (another audience list), holds only successes, and is used
// only while the token has not expired (its `exp` itself, without the clock skew a full check
// allows) and for at most `maxAgeMs` after it was verified, so a key the issuer withdrew, or a
// changed exchange file (a new verifier, a new cache), stops a token as soon as a full check would,
// or within that age. The claims handed out are frozen: no caller can change what the next one gets.
// Bounded: the oldest entries go first; held in memory only, like the tokens of the requests in flight.
import { createHash } from 'node:crypto';
import type { JWTPayload } from 'jose';

export interface VerifiedTokenCacheOptions {
  /** Entries at most; default 4096. */
  maxEntries?: number;
  /** How long after its verification an entry is used; default 60 s. */
  maxAgeMs?: number;
}

interface Entry {
  claims: JWTPayload;
  /** Epoch ms after which the entry is not used. */
  until: number;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

export class VerifiedTokenCache {
  private readonly entries = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;

  constructor(options: VerifiedTokenCacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? 4096;
    this.maxAgeMs = options.maxAgeMs ?? 60_000;
  }

  /** The key of a token verified as `type`: a digest, so the token itself is not kept. */
  static keyOf(token: string, type: string): string {
    return createHash('sha256').update(type).update('\0').update(token).digest('base64url');
  }

  /** The claims of a token verified as `type` that may still be used at `now`; undefined otherwise. */
  get(key: string, now: number): JWTPayload | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (now >= entry.until) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.claims;
  }

  /** Keeps a verification's claims (which it freezes); a token without a numeric exp is not kept. */
  set(key: string, claims: JWTPayload, now: number): JWTPayload {
    const frozen = deepFreeze(claims);
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) return frozen;
    const until = Math.min(claims.exp * 1000, now + this.maxAgeMs);
    if (until <= now) return frozen;
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { claims: frozen, until });
    return frozen;
  }

  get size(): number {
    return this.entries.size;
  }
}
