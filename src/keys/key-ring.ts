// Application-level encryption of tokens: AES-256-GCM per value, additional authenticated data
// that binds each ciphertext to its row and field (a value copied into another row or column
// fails to decrypt), and AES keys that are never used for more than 65,536 values.
//
// Why not the ring key itself: GCM with random 96-bit nonces allows about 2^32 seals per key
// before a nonce repeats with non-negligible probability, and one repeat leaks the XOR of two
// plaintexts and the authentication key. So values are sealed under a session key, derived with
// HKDF-SHA256 from the ring key and 128 random bits of salt, and its nonces count up from zero:
// under one session key no nonce repeats by construction, and two session keys can only be the
// same if two salts collide (at 10,000 seals/s for 10 years, 4.9e7 session keys: about n^2 / 2^129
// ~ 4e-24). One derivation per 65,536 seals instead of one per value: an HKDF per value was a
// fifth of the sidecar's capture CPU (bench/RESULTS.md).
//
// Format v3: "TT\x03\x00" | salt (16) | nonce (12) | ciphertext | tag (16), key = HKDF(ring key,
// salt, "token-tap/v3 session key"), sealed with TOKEN_TAP_SEAL_FORMAT=3. Format v2 (a key per
// value: HKDF info also names the value's row and field, random nonce) is sealed by default, for
// releases that open only v2 and v1; v1 (nonce | ciphertext | tag under the ring key) still opens.
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { TokenTapError } from '../lib/errors.js';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

export interface KeyRing {
  /** The key new values are sealed with: the first entry of TOKEN_TAP_KEYS. */
  readonly activeKeyId: string;
  readonly keys: ReadonlyMap<string, Buffer>;
  /**
   * The fingerprint key (TOKEN_TAP_FINGERPRINT_KEY): it must not change when the active key
   * does, or sidecars of different rings disagree on fingerprints. Undefined: derived from the
   * active key, as before the setting existed.
   */
  readonly fingerprintKey?: Buffer;
  /**
   * The format new values are sealed in (TOKEN_TAP_SEAL_FORMAT): 2 (a key per value, which the
   * releases before format 3 open too) unless set to 3, once no sidecar of those releases is left
   * in the fleet or may be rolled back to (docs/upgrading.md). Both are opened whatever it says.
   */
  readonly sealFormat?: 2 | 3;
}

/** TOKEN_TAP_KEYS (or the fingerprint key, the seal format) cannot be used; names entries, never key material. */
export class KeyRingError extends TokenTapError {
  override name = 'KeyRingError';
  constructor(message: string) {
    super(message, 'misconfigured');
  }
}

/** A sealed value cannot be opened (its key is not in the ring, or it was altered); answered to API callers as it is. */
export class DecryptError extends TokenTapError {
  override name = 'DecryptError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'failed_precondition', { ...options, exposable: true });
  }
}

/**
 * Parses `id1:base64key,id0:base64key`. The first key is active; the others still decrypt.
 * Errors name the entry by position and key id, never the key material.
 */
export function parseKeyRing(spec: string, fingerprintKeySpec?: string, sealFormatSpec?: string): KeyRing {
  const problems: string[] = [];
  const keys = new Map<string, Buffer>();
  const entries = spec
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
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
  let fingerprintKey: Buffer | undefined;
  if (fingerprintKeySpec !== undefined && fingerprintKeySpec !== '') {
    fingerprintKey = Buffer.from(fingerprintKeySpec.trim(), 'base64');
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(fingerprintKeySpec.trim()) || fingerprintKey.length !== KEY_BYTES) {
      problems.push(`TOKEN_TAP_FINGERPRINT_KEY must be ${KEY_BYTES} bytes, base64 (generate one with: openssl rand -base64 32)`);
    }
  }
  const sealFormat = sealFormatSpec === undefined || sealFormatSpec.trim() === '' ? undefined : Number(sealFormatSpec.trim());
  if (sealFormat !== undefined && sealFormat !== 2 && sealFormat !== 3) problems.push(`TOKEN_TAP_SEAL_FORMAT must be 2 or 3, got "${sealFormatSpec}"`);
  if (problems.length > 0) throw new KeyRingError(problems.join('; '));
  const activeKeyId = entries[0]!.slice(0, entries[0]!.indexOf(':'));
  return { activeKeyId, keys, ...(fingerprintKey ? { fingerprintKey } : {}), ...(sealFormat === 3 ? { sealFormat: 3 as const } : {}) };
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

// Nonces and salts come from one CSPRNG call per 4 KiB rather than one per seal: a getrandom()
// call for each costs 8% of the sidecar's CPU per capture (measured). Each refill is a new
// buffer, so handed-out bytes are never overwritten.
const NONCE_POOL_BYTES = 4096;
let noncePool = Buffer.alloc(0);
let noncePoolOffset = 0;

function freshRandom(bytes: number): Buffer {
  if (noncePoolOffset + bytes > noncePool.length) {
    noncePool = randomBytes(NONCE_POOL_BYTES);
    noncePoolOffset = 0;
  }
  const random = noncePool.subarray(noncePoolOffset, noncePoolOffset + bytes);
  noncePoolOffset += bytes;
  return random;
}

const V2_MAGIC = Buffer.from([0x54, 0x54, 0x02, 0x00]);
const V3_MAGIC = Buffer.from([0x54, 0x54, 0x03, 0x00]);
const SALT_BYTES = 16;
/** Both formats are magic | salt | nonce | ciphertext | tag. */
const SALTED_OVERHEAD = V2_MAGIC.length + SALT_BYTES + NONCE_BYTES + TAG_BYTES;
/** Seals per session key; the nonce counter never gets near its 2^64. */
const SESSION_SEALS = 65_536;

function valueKey(ringKey: Buffer, salt: Buffer, binding: FieldBinding): Buffer {
  return Buffer.from(hkdfSync('sha256', ringKey, salt, JSON.stringify(['token-tap/v2 value key', binding.idp, binding.subject, binding.field]), KEY_BYTES));
}

function sessionKey(ringKey: Buffer, salt: Buffer): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', ringKey, salt, 'token-tap/v3 session key', KEY_BYTES)));
}

// Opening derives the key again (an HKDF, ~30 µs); the values of one capture, and reads of the
// same grants, share keys, so the last few thousand derived keys are kept (in memory only, like
// the ring itself). Eviction gives a key used since it was last looked at a second chance (CLOCK,
// a near-LRU whose hit is one flag write): a format 2 grant has a key per field (four per read), and
// with first-in-first-out eviction a grant read all the time was derived again whenever 4,096
// other values had been opened since its first read.
const OPENED_KEYS_MAX = 4096;
const openedKeys = new Map<string, { ringKey: Buffer; key: KeyObject | Buffer; used: boolean }>();
let derivedForOpening = 0;

/** Keys derived to open values since start (cache misses; each an HKDF): for tests and profiles. */
export function openingKeyDerivations(): number {
  return derivedForOpening;
}

function cachedKey(cacheKey: string, ringKey: Buffer, derive: () => KeyObject | Buffer): KeyObject | Buffer {
  const cached = openedKeys.get(cacheKey);
  // A ring reloaded with another key under the same id must not reuse a key of the old one.
  if (cached && cached.ringKey === ringKey) {
    cached.used = true;
    return cached.key;
  }
  const key = derive();
  derivedForOpening += 1;
  openedKeys.delete(cacheKey);
  // Map keeps insertion order: the oldest goes, unless used since, then it moves to the back unmarked.
  while (openedKeys.size >= OPENED_KEYS_MAX) {
    const [oldestKey, oldest] = openedKeys.entries().next().value!;
    openedKeys.delete(oldestKey);
    if (oldest.used) {
      oldest.used = false;
      openedKeys.set(oldestKey, oldest);
    }
  }
  openedKeys.set(cacheKey, { ringKey, key, used: false });
  return key;
}

interface SealingSession {
  salt: Buffer;
  key: KeyObject;
  sealed: number;
}

/** The session of each ring key (a ring may be reloaded; a key is never shared across ring keys). */
const sessions = new WeakMap<Buffer, SealingSession>();

function sessionFor(ringKey: Buffer): SealingSession {
  let session = sessions.get(ringKey);
  if (!session || session.sealed >= SESSION_SEALS) {
    const salt = Buffer.from(freshRandom(SALT_BYTES));
    session = { salt, key: sessionKey(ringKey, salt), sealed: 0 };
    sessions.set(ringKey, session);
  }
  return session;
}

/** Under the ring's active key: format v3 (the current session key, the next nonce of its count) with TOKEN_TAP_SEAL_FORMAT=3, else v2. */
export function seal(ring: KeyRing, plaintext: string, binding: FieldBinding): Buffer {
  if (ring.sealFormat !== 3) return sealV2(ring, plaintext, binding);
  const session = sessionFor(keyFor(ring, ring.activeKeyId));
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeUInt32BE(session.sealed, NONCE_BYTES - 4);
  session.sealed += 1;
  return encrypt(session.key, nonce, ring, plaintext, binding, [V3_MAGIC, session.salt]);
}

/** AES-256-GCM of `plaintext` bound to its row and field: header | nonce | ciphertext | tag. */
function encrypt(key: KeyObject | Buffer, nonce: Buffer, ring: KeyRing, plaintext: string, binding: FieldBinding, header: Buffer[]): Buffer {
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(additionalData(binding, ring.activeKeyId));
  return Buffer.concat([...header, nonce, cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
}

/** Seals the v2 way (a key for this value alone, random nonce): the default until TOKEN_TAP_SEAL_FORMAT=3. */
export function sealV2(ring: KeyRing, plaintext: string, binding: FieldBinding): Buffer {
  const salt = freshRandom(SALT_BYTES);
  const nonce = freshRandom(NONCE_BYTES);
  return encrypt(valueKey(keyFor(ring, ring.activeKeyId), salt, binding), nonce, ring, plaintext, binding, [V2_MAGIC, salt]);
}

function decrypt(key: KeyObject | Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): string | undefined {
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

export function open(ring: KeyRing, keyId: string, sealed: Buffer, binding: FieldBinding): string {
  const key = keyFor(ring, keyId);
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new DecryptError(`${binding.field} ciphertext is truncated`);
  const aad = additionalData(binding, keyId);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  // A v1 value starts with a random nonce, so it may begin with a v2/v3 marker (2^-32): when that
  // authentication fails, v1 is tried; GCM's tag tells them apart.
  if (sealed.length >= SALTED_OVERHEAD) {
    const magic = sealed.subarray(0, V3_MAGIC.length);
    const v3 = magic.equals(V3_MAGIC);
    if (v3 || magic.equals(V2_MAGIC)) {
      const salt = sealed.subarray(V3_MAGIC.length, V3_MAGIC.length + SALT_BYTES);
      const nonce = sealed.subarray(V3_MAGIC.length + SALT_BYTES, V3_MAGIC.length + SALT_BYTES + NONCE_BYTES);
      const saltText = salt.toString('base64');
      const valueKeyOf = v3
        ? cachedKey(`3\0${keyId}\0${saltText}`, key, () => sessionKey(key, Buffer.from(salt)))
        : cachedKey(`2\0${keyId}\0${saltText}\0${binding.idp}\0${binding.subject}\0${binding.field}`, key, () => valueKey(key, salt, binding));
      const plain = decrypt(valueKeyOf, nonce, sealed.subarray(V3_MAGIC.length + SALT_BYTES + NONCE_BYTES, sealed.length - TAG_BYTES), tag, aad);
      if (plain !== undefined) return plain;
    }
  }
  const plain = decrypt(key, sealed.subarray(0, NONCE_BYTES), sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES), tag, aad);
  if (plain !== undefined) return plain;
  throw new DecryptError(
    `${binding.field} of grant (${binding.idp}, ${binding.subject}) failed authentication under key "${keyId}": wrong key, or the value was altered or moved`,
  );
}

/** Seals the v1 way (nonce | ciphertext | tag under the ring key itself); tests of old rows only. */
export function sealV1(ring: KeyRing, plaintext: string, binding: FieldBinding): Buffer {
  return encrypt(keyFor(ring, ring.activeKeyId), freshRandom(NONCE_BYTES), ring, plaintext, binding, []);
}

const fingerprintKeys = new WeakMap<Buffer, Map<string, Buffer>>();

/** The HMAC key of one kind of fingerprint (`info`), derived once from `base`. */
function fingerprintKeyOf(base: Buffer, info: string): Buffer {
  let derived = fingerprintKeys.get(base);
  if (!derived) fingerprintKeys.set(base, (derived = new Map()));
  let key = derived.get(info);
  if (!key) derived.set(info, (key = Buffer.from(hkdfSync('sha256', base, Buffer.alloc(0), info, 32))));
  return key;
}

function keyedDigest(base: Buffer, info: string, text: string): string {
  return createHmac('sha256', fingerprintKeyOf(base, info)).update(text, 'utf8').digest('base64url').slice(0, 32);
}

const TOKEN_FINGERPRINT = 'token-tap/v1 fingerprint';
// A key of its own: a subject's fingerprint never equals a token's, whatever the two texts are.
const SUBJECT_FINGERPRINT = 'token-tap/v1 subject fingerprint';

/**
 * A keyed fingerprint of a token, so the database alone cannot confirm a guessed token. With
 * TOKEN_TAP_FINGERPRINT_KEY every sidecar agrees whatever its ring ("fp:" prefix); without it the
 * key is derived from the active key ("<key id>:" prefix), so rings with different active keys
 * disagree: profile correlation and event matching then work only within one ring.
 */
export function fingerprint(ring: KeyRing, token: string): string {
  const digest = keyedDigest(ring.fingerprintKey ?? keyFor(ring, ring.activeKeyId), TOKEN_FINGERPRINT, token);
  return `${ring.fingerprintKey ? 'fp' : ring.activeKeyId}:${digest}`;
}

/**
 * A keyed fingerprint of a user's subject, as fingerprint() makes one of a token (same key, same
 * prefixes, a key derived for subjects): what a quarantined capture records of its user, so an
 * erasure finds it without the subject being stored in the clear.
 */
export function subjectFingerprint(ring: KeyRing, subject: string): string {
  return `${ring.fingerprintKey ? 'fp' : ring.activeKeyId}:${keyedDigest(ring.fingerprintKey ?? keyFor(ring, ring.activeKeyId), SUBJECT_FINGERPRINT, subject)}`;
}

/**
 * Every fingerprint of `subject` a row may carry that this ring can make: under the fingerprint key,
 * and under each key of the ring as the active key it once was (a row written before
 * TOKEN_TAP_FINGERPRINT_KEY was set, by a sidecar without it, or before a rotation).
 */
export function subjectFingerprintCandidates(ring: KeyRing, subject: string): string[] {
  const candidates = ring.fingerprintKey ? [`fp:${keyedDigest(ring.fingerprintKey, SUBJECT_FINGERPRINT, subject)}`] : [];
  for (const [keyId, key] of ring.keys) candidates.push(`${keyId}:${keyedDigest(key, SUBJECT_FINGERPRINT, subject)}`);
  return candidates;
}

/** JSON.parse of decrypted text whose errors never quote it (V8's SyntaxError shows the text). */
export function parseDecrypted<T>(plaintext: string, what: string): T {
  try {
    return JSON.parse(plaintext) as T;
  } catch {
    throw new DecryptError(`${what} decrypted to something that is not JSON (${plaintext.length} characters): written by another version, or corrupt`);
  }
}
