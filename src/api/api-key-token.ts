// API keys as callers hold them: "ttk_<id>_<secret>". The id is public (it names the key in
// listings and audit rows); only a hash of the secret is stored, and it is compared in constant time.
import { randomBytes } from 'node:crypto';
import { matchesSecretDigest, secretDigest } from '../lib/constant-time.js';

const PREFIX = 'ttk_';
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const KEY_PATTERN = /^ttk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface ApiKeyParts {
  id: string;
  secret: string;
}

export interface NewApiKey extends ApiKeyParts {
  /** What the caller sends; shown once, never stored. */
  token: string;
}

export function generateApiKey(): NewApiKey {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, secret, token: `${PREFIX}${id}_${secret}` };
}

/** The parts of a well-formed key; undefined for anything else. */
export function parseApiKey(token: string): ApiKeyParts | undefined {
  const match = KEY_PATTERN.exec(token);
  if (!match || !SECRET_PATTERN.test(match[2]!)) return undefined;
  return { id: match[1]!, secret: match[2]! };
}

export function hashApiKeySecret(secret: string): Buffer {
  return secretDigest(secret);
}

// Compared even when the key id is unknown, so an unknown id takes as long as a wrong secret.
const UNKNOWN_KEY_HASH = hashApiKeySecret(randomBytes(32).toString('base64url'));

/** Constant-time check of a presented secret against a stored hash (or none, for an unknown id). */
export function secretMatches(secret: string, storedHash: Buffer | undefined): boolean {
  const expected = storedHash && storedHash.length === UNKNOWN_KEY_HASH.length ? storedHash : UNKNOWN_KEY_HASH;
  return matchesSecretDigest(secret, expected) && expected !== UNKNOWN_KEY_HASH;
}
