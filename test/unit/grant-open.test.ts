// Opening a grants row (src/store/grant-reads.ts): all at once (decryptGrant), or each sealed field
// when first read (decryptGrantWhenRead, the token exchange's reads): the same grant either way, and
// a field that cannot be opened fails where it is read, not the fields the caller serves.
import { expect } from 'chai';
import { DecryptError, generateKeySpec, openingKeyDerivations, parseKeyRing, seal } from '../../src/keys/key-ring.js';
import { decryptGrant, decryptGrantWhenRead, type OpenableGrantRow } from '../../src/store/grant-reads.js';

const ring = parseKeyRing(generateKeySpec('k1'));
const claims = { sub: 'user-1', email: 'a@x.test', email_verified: true };
const idToken = `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;

function row(overrides: Partial<OpenableGrantRow> = {}): OpenableGrantRow {
  const sealed = (value: string, field: string) => seal(ring, value, { idp: 'entra', subject: 'user-1', field });
  const at = new Date('2026-12-05T10:00:00Z');
  return {
    idp: 'entra',
    subject: 'user-1',
    issuer: 'https://login.example',
    client_id: 'app',
    email: 'a@x.test',
    scope: ['openid'],
    token_type: 'Bearer',
    key_id: 'k1',
    access_token: sealed('access-1', 'access_token'),
    refresh_token: sealed('refresh-1', 'refresh_token'),
    id_token: sealed(idToken, 'id_token'),
    extras: sealed(JSON.stringify({ response: { ext_expires_in: 3600 } }), 'extras'),
    access_token_expires_at: at,
    refresh_token_expires_at: null,
    id_token_expires_at: at,
    status: 'active',
    verified: true,
    captured_at: at,
    updated_at: at,
    version: 3,
    refresh_token_key_id: 'k1',
    id_token_key_id: 'k1',
    last_refreshed_at: null,
    ...overrides,
  };
}

describe('opening a grants row', () => {
  it('gives the same grant whether its fields are opened at once or when read', () => {
    const eager = decryptGrant(ring, row());
    expect(eager).to.include({ accessToken: 'access-1', refreshToken: 'refresh-1', idToken });
    expect(eager.claims).to.deep.equal(claims);
    expect(eager.extras).to.deep.equal({ ext_expires_in: 3600 });
    expect({ ...decryptGrantWhenRead(ring, row()) }).to.deep.equal(eager);
  });

  it('opens a field when it is first read, once, and no other', () => {
    const grant = decryptGrantWhenRead(ring, row());
    const before = openingKeyDerivations();
    expect(grant.accessToken).to.equal('access-1');
    expect(Object.getOwnPropertyDescriptor(grant, 'accessToken')).to.include({ value: 'access-1' });
    expect(Object.getOwnPropertyDescriptor(grant, 'refreshToken')?.get).to.be.a('function');
    expect(Object.getOwnPropertyDescriptor(grant, 'claims')?.get).to.be.a('function');
    expect(openingKeyDerivations() - before).to.equal(1);
    expect(grant.accessToken).to.equal('access-1');
    expect(openingKeyDerivations() - before).to.equal(1);
  });

  it('fails on a field that cannot be opened where it is read: a grant opened at once fails whole', () => {
    const altered = row();
    altered.id_token![altered.id_token!.length - 1]! ^= 1;
    expect(() => decryptGrant(ring, altered)).to.throw(DecryptError, /id_token/);
    const grant = decryptGrantWhenRead(ring, altered);
    expect(grant.accessToken).to.equal('access-1');
    expect(() => grant.idToken).to.throw(DecryptError, /id_token/);
    expect(() => grant.claims).to.throw(DecryptError, /id_token/);
  });

  it('reads absent fields as null, and no id_token as no claims', () => {
    const grant = decryptGrantWhenRead(ring, row({ refresh_token: null, id_token: null, extras: null }));
    expect(grant).to.include({ refreshToken: null, idToken: null, claims: null });
    expect(grant.extras).to.deep.equal({});
  });
});
