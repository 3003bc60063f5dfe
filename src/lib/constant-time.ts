// Comparing a secret someone presents with the one we hold without the time taken telling how much
// of it matched, or how long either is: both sides are SHA-256 digests (one length), compared with
// timingSafeEqual. The TokenVault API's keys and the Okta hook's header secret are checked here.
import { createHash, timingSafeEqual } from 'node:crypto';

/** The SHA-256 digest a secret is held as, for comparing with one presented later. */
export function secretDigest(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Whether `presented` is the secret `heldDigest` was made from (by secretDigest), in constant time. */
export function matchesSecretDigest(presented: string, heldDigest: Buffer): boolean {
  return timingSafeEqual(secretDigest(presented), heldDigest);
}
