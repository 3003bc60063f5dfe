import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import {
  DecryptError,
  fingerprint,
  generateKeySpec,
  KeyRingError,
  open,
  openingKeyDerivations,
  parseKeyRing,
  seal,
  sealV1,
  sealV2,
  subjectFingerprint,
  subjectFingerprintCandidates,
} from '../../src/keys/key-ring.js';

const binding = { idp: 'entra', subject: 'user-1', field: 'refresh_token' };

describe('keys/key-ring', () => {
  describe('parseKeyRing', () => {
    it('takes the first key as active and keeps the others for decryption', () => {
      const ring = parseKeyRing(`${generateKeySpec('k2')},${generateKeySpec('k1')}`);
      expect(ring.activeKeyId).to.equal('k2');
      expect([...ring.keys.keys()]).to.deep.equal(['k2', 'k1']);
    });

    it('reports every malformed entry at once, naming key ids but never key material', () => {
      const shortKey = randomBytes(16).toString('base64');
      try {
        parseKeyRing(`k1:${shortKey},nocolon,k3:!!!notbase64,k1:${randomBytes(32).toString('base64')}`);
        expect.fail('should have thrown');
      } catch (error) {
        expect(error).to.be.instanceOf(KeyRingError);
        const message = (error as Error).message;
        expect(message).to.contain('"k1"').and.contain('16 bytes, expected 32');
        expect(message).to.contain('entry 2 is not "keyid:base64key"');
        expect(message).to.contain('"k3"').and.contain('not base64');
        expect(message).to.not.contain(shortKey);
      }
    });

    it('rejects an empty ring and duplicate key ids', () => {
      expect(() => parseKeyRing('')).to.throw(KeyRingError, /empty/);
      const key = randomBytes(32).toString('base64');
      expect(() => parseKeyRing(`a:${key},a:${key}`)).to.throw(KeyRingError, /appears twice/);
    });
  });

  describe('seal and open', () => {
    // Format 3 (TOKEN_TAP_SEAL_FORMAT=3); the default, format 2, is tested below.
    const ring = parseKeyRing(generateKeySpec('k1'), undefined, '3');

    it('round-trips a value and never repeats a nonce', () => {
      const first = seal(ring, 'secret-refresh-token', binding);
      const second = seal(ring, 'secret-refresh-token', binding);
      expect(open(ring, 'k1', first, binding)).to.equal('secret-refresh-token');
      expect(first.equals(second)).to.equal(false);
      expect(first.subarray(20, 32).equals(second.subarray(20, 32))).to.equal(false);
      expect(first.toString('latin1')).to.not.contain('secret-refresh-token');
    });

    it('never repeats a (session salt, nonce) pair, and starts a new session key after 65,536 seals', () => {
      const fresh = parseKeyRing(generateKeySpec('k1'), undefined, '3');
      const pairs = new Set<string>();
      const salts = new Set<string>();
      for (let index = 0; index < 65_536 + 10; index += 1) {
        const sealed = seal(fresh, 'v', binding);
        salts.add(sealed.subarray(4, 20).toString('hex'));
        pairs.add(sealed.subarray(4, 32).toString('hex'));
      }
      expect(pairs.size).to.equal(65_546);
      expect(salts.size).to.equal(2);
      // Every one of them opens: the second session's values too.
      expect(open(fresh, 'k1', seal(fresh, 'last', binding), binding)).to.equal('last');
    });

    it('gives each ring key its own session: two rings never share a salt', () => {
      const one = parseKeyRing(generateKeySpec('k1'), undefined, '3');
      const two = parseKeyRing(generateKeySpec('k1'), undefined, '3');
      expect(
        seal(one, 'v', binding)
          .subarray(4, 20)
          .equals(seal(two, 'v', binding).subarray(4, 20)),
      ).to.equal(false);
    });

    it('seals format v3 (marker, salt, nonce, ciphertext, tag) under a session key', () => {
      const sealed = seal(ring, 'value', binding);
      expect([...sealed.subarray(0, 4)]).to.deep.equal([0x54, 0x54, 0x03, 0x00]);
      expect(sealed.length).to.equal(4 + 16 + 12 + 'value'.length + 16);
    });

    it('still opens values sealed as v2 (a key per value), and binds them to their row and field', () => {
      const old = sealV2(ring, 'stored-as-v2', binding);
      expect([...old.subarray(0, 4)]).to.deep.equal([0x54, 0x54, 0x02, 0x00]);
      expect(open(ring, 'k1', old, binding)).to.equal('stored-as-v2');
      expect(open(ring, 'k1', old, binding)).to.equal('stored-as-v2');
      expect(() => open(ring, 'k1', old, { ...binding, subject: 'user-2' })).to.throw(DecryptError);
      expect(() => open(parseKeyRing(generateKeySpec('k1')), 'k1', old, binding)).to.throw(DecryptError);
    });

    it('seals format v2 by default (releases before format 3 open it), v3 with TOKEN_TAP_SEAL_FORMAT=3, and opens both either way; anything but 2 or 3 is refused', () => {
      const spec = generateKeySpec('k1');
      const byDefault = seal(parseKeyRing(spec), 'value', binding);
      expect([...byDefault.subarray(0, 4)]).to.deep.equal([0x54, 0x54, 0x02, 0x00]);
      expect([...seal(parseKeyRing(spec, undefined, '2'), 'v', binding).subarray(0, 4)]).to.deep.equal([0x54, 0x54, 0x02, 0x00]);
      const v3 = seal(parseKeyRing(spec, undefined, '3'), 'value', binding);
      expect([...v3.subarray(0, 4)]).to.deep.equal([0x54, 0x54, 0x03, 0x00]);
      expect(open(parseKeyRing(spec, undefined, '3'), 'k1', byDefault, binding)).to.equal('value');
      expect(open(parseKeyRing(spec), 'k1', v3, binding)).to.equal('value');
      expect(() => parseKeyRing(spec, undefined, '4')).to.throw(KeyRingError, /TOKEN_TAP_SEAL_FORMAT must be 2 or 3/);
    });

    it('a cached session key is not reused for another ring key under the same id', () => {
      const sealed = seal(ring, 'value', binding);
      expect(open(ring, 'k1', sealed, binding)).to.equal('value');
      const other = parseKeyRing(generateKeySpec('k1'));
      expect(() => open(other, 'k1', sealed, binding)).to.throw(DecryptError);
    });

    it('still opens values sealed before v2 (nonce | ciphertext | tag under the ring key)', () => {
      const old = sealV1(ring, 'stored-before-v2', binding);
      expect(old.length).to.equal(12 + 'stored-before-v2'.length + 16);
      expect(open(ring, 'k1', old, binding)).to.equal('stored-before-v2');
      expect(() => open(ring, 'k1', old, { ...binding, field: 'id_token' })).to.throw(DecryptError);
    });

    it('fails with the wrong key', () => {
      const sealed = seal(ring, 'value', binding);
      const other = parseKeyRing(generateKeySpec('k1'));
      expect(() => open(other, 'k1', sealed, binding)).to.throw(DecryptError, /failed authentication/);
    });

    it('fails when any bit is flipped', () => {
      const sealed = seal(ring, 'value', binding);
      for (const index of [0, 11, 12, sealed.length - 17, sealed.length - 1]) {
        const tampered = Buffer.from(sealed);
        tampered[index]! ^= 0x01;
        expect(() => open(ring, 'k1', tampered, binding), `byte ${index}`).to.throw(DecryptError);
      }
    });

    it('fails when the value is moved to another row or field (AAD)', () => {
      const sealed = seal(ring, 'value', binding);
      expect(() => open(ring, 'k1', sealed, { ...binding, subject: 'user-2' })).to.throw(DecryptError);
      expect(() => open(ring, 'k1', sealed, { ...binding, idp: 'google' })).to.throw(DecryptError);
      expect(() => open(ring, 'k1', sealed, { ...binding, field: 'access_token' })).to.throw(DecryptError);
    });

    it('binds the key id, so a key renamed in the ring does not open old values', () => {
      const key = randomBytes(32).toString('base64');
      const sealed = seal(parseKeyRing(`k1:${key}`), 'value', binding);
      expect(() => open(parseKeyRing(`k9:${key}`), 'k9', sealed, binding)).to.throw(DecryptError);
    });

    it('names the missing key id when a value was sealed under a key not in the ring', () => {
      const sealed = seal(ring, 'value', binding);
      expect(() => open(parseKeyRing(generateKeySpec('k2')), 'k1', sealed, binding)).to.throw(DecryptError, /key id "k1"/);
    });
  });

  describe('derived keys kept for opening', () => {
    it('keeps the key of a value read all the time while thousands of other values are opened (a used key gets a second chance)', () => {
      const ring = parseKeyRing(generateKeySpec('k1'));
      const hot = sealV2(ring, 'hot', binding);
      open(ring, 'k1', hot, binding);
      const before = openingKeyDerivations();
      // More other values than the cache holds (4,096), the hot one read between each.
      for (let index = 0; index < 4200; index += 1) {
        const other = { ...binding, subject: `other-${index}` };
        open(ring, 'k1', sealV2(ring, 'other', other), other);
        expect(open(ring, 'k1', hot, binding)).to.equal('hot');
      }
      // One derivation per other value, none for the hot one.
      expect(openingKeyDerivations() - before).to.equal(4200);
    });

    it('derives a key once per value and ring key, again after the ring key changes under the same id', () => {
      const ring = parseKeyRing(generateKeySpec('k1'));
      const sealed = sealV2(ring, 'value', binding);
      const before = openingKeyDerivations();
      for (let index = 0; index < 3; index += 1) open(ring, 'k1', sealed, binding);
      expect(openingKeyDerivations() - before).to.equal(1);
      const reloaded = parseKeyRing(`k1:${ring.keys.get('k1')!.toString('base64')}`);
      open(reloaded, 'k1', sealed, binding);
      expect(openingKeyDerivations() - before).to.equal(2);
    });
  });

  describe('fingerprint', () => {
    it('is stable for one ring, differs across keys, and does not contain the token', () => {
      const ring = parseKeyRing(generateKeySpec('k1'));
      const other = parseKeyRing(generateKeySpec('k1'));
      expect(fingerprint(ring, 'tok')).to.equal(fingerprint(ring, 'tok'));
      expect(fingerprint(ring, 'tok')).to.not.equal(fingerprint(ring, 'tok2'));
      expect(fingerprint(ring, 'tok')).to.not.equal(fingerprint(other, 'tok'));
      expect(fingerprint(ring, 'token-value-123')).to.match(/^k1:[A-Za-z0-9_-]{32}$/);
    });

    it('with TOKEN_TAP_FINGERPRINT_KEY, agrees between rings whatever their active key (a key rollout)', () => {
      const k1 = generateKeySpec('k1');
      const fingerprintKey = randomBytes(32).toString('base64');
      const oldRing = parseKeyRing(k1, fingerprintKey);
      const newRing = parseKeyRing(`${generateKeySpec('k2')},${k1}`, fingerprintKey);
      expect(fingerprint(oldRing, 'tok'))
        .to.equal(fingerprint(newRing, 'tok'))
        .and.match(/^fp:[A-Za-z0-9_-]{32}$/);
      expect(fingerprint(parseKeyRing(k1), 'tok')).to.not.equal(fingerprint(parseKeyRing(`${generateKeySpec('k2')},${k1}`), 'tok'));
      expect(() => parseKeyRing(k1, 'c2hvcnQ=')).to.throw(KeyRingError, /TOKEN_TAP_FINGERPRINT_KEY must be 32 bytes/);
    });
  });

  describe('subject fingerprints (quarantined captures)', () => {
    const hmac = (key: Buffer, info: string, text: string) =>
      createHmac('sha256', Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), info, 32)))
        .update(text, 'utf8')
        .digest('base64url')
        .slice(0, 32);

    it("token fingerprints are what they were (stored ones must still match); a subject's is made under a key of its own", () => {
      const spec = generateKeySpec('k1');
      const ring = parseKeyRing(spec);
      const key = Buffer.from(spec.slice(3), 'base64');
      expect(fingerprint(ring, 'alice')).to.equal(`k1:${hmac(key, 'token-tap/v1 fingerprint', 'alice')}`);
      expect(subjectFingerprint(ring, 'alice')).to.equal(`k1:${hmac(key, 'token-tap/v1 subject fingerprint', 'alice')}`);
      expect(subjectFingerprint(ring, 'alice')).to.not.equal(fingerprint(ring, 'alice')).and.not.contain('alice');
    });

    it('the candidates of a ring include what it made before a rotation and before TOKEN_TAP_FINGERPRINT_KEY was set', () => {
      const k1 = generateKeySpec('k1');
      const fingerprintKey = randomBytes(32).toString('base64');
      const before = subjectFingerprint(parseKeyRing(k1), 'bob');
      const rotated = parseKeyRing(`${generateKeySpec('k2')},${k1}`);
      expect(subjectFingerprint(rotated, 'bob')).to.not.equal(before);
      expect(subjectFingerprintCandidates(rotated, 'bob')).to.include(before).and.include(subjectFingerprint(rotated, 'bob'));
      const withKey = parseKeyRing(`${generateKeySpec('k2')},${k1}`, fingerprintKey);
      expect(subjectFingerprint(withKey, 'bob'))
        .to.match(/^fp:/)
        .and.equal(subjectFingerprint(parseKeyRing(k1, fingerprintKey), 'bob'));
      expect(subjectFingerprintCandidates(withKey, 'bob')).to.include(before).and.include(subjectFingerprint(withKey, 'bob')).and.have.length(3);
      expect(subjectFingerprintCandidates(withKey, 'carol')).to.not.include(subjectFingerprint(withKey, 'bob'));
    });
  });
});
