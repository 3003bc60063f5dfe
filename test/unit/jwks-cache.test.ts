// The JWKS cache (src/idp/jwks.ts) the id_token verifier, the Okta hook and the token exchange share:
// fetches on demand, at most once per cooldown (a clock of the test's), a refetch for an unknown
// kid, one fetch for sources of the same URL, answers bounded in bytes and time, and no key for a
// symmetric algorithm. Against a key server on loopback.
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { errors, exportJWK, generateKeyPair, type JWK } from 'jose';
import { ASYMMETRIC_ALGORITHMS, JwksCache, JwksUnavailable, MAX_DOCUMENT_BYTES, type JwksSource } from '../../src/idp/jwks.js';

type FetchEvent = { idp: string; ok: boolean; problem?: string };

const COOLDOWN_MS = 30_000;
const NO_TOKEN = { payload: '', signature: '' };

describe('JWKS cache', () => {
  let server: Server;
  let origin: string;
  /** What /jwks serves; swapped by tests (an IdP publishing a new key). */
  let published: JWK[] = [];
  let jwksDown = false;
  const requests = new Map<string, number>();
  let k1: JWK;
  let k2: JWK;
  let clock = 1_000_000;
  let events: FetchEvent[] = [];

  const routes: Record<string, (response: ServerResponse) => void> = {
    '/jwks': (response) =>
      jwksDown ? response.writeHead(503).end() : response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published })),
    '/other-jwks': (response) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [k1] })),
    '/with-secret': (response) =>
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ keys: [k1, { kty: 'oct', kid: 's1', k: Buffer.alloc(32, 7).toString('base64url') }] })),
    // 1 MiB, written at once, with no content-length: the read itself must stop.
    '/big': (response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(`{"keys":[],"pad":"${' '.repeat(1024 * 1024)}"}`);
    },
    '/never': () => undefined,
    '/stalls': (response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"keys":[');
    },
    '/down': (response) => response.writeHead(503).end(),
    '/issuer/.well-known/openid-configuration': (response) =>
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: `${origin}/issuer`, jwks_uri: `${origin}/jwks` })),
    '/impostor/.well-known/openid-configuration': (response) =>
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: `${origin}/issuer`, jwks_uri: `${origin}/jwks` })),
  };

  before(async () => {
    const [one, two] = await Promise.all([generateKeyPair('RS256'), generateKeyPair('RS256')]);
    k1 = { ...(await exportJWK(one.publicKey)), kid: 'k1', alg: 'RS256' };
    k2 = { ...(await exportJWK(two.publicKey)), kid: 'k2', alg: 'RS256' };
    server = createServer((request, response) => {
      const path = request.url ?? '';
      requests.set(path, (requests.get(path) ?? 0) + 1);
      const route = routes[path];
      if (route) route(response);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => {
    published = [k1];
    jwksDown = false;
    requests.clear();
    events = [];
    clock = 1_000_000;
  });

  const cache = (options: { maxAgeMs?: number } = {}) =>
    new JwksCache({ cooldownMs: COOLDOWN_MS, now: () => clock, onFetch: (event) => events.push(event), ...options });
  const source = (path: string, extra: Partial<JwksSource> = {}): JwksSource => ({
    name: 'acme',
    issuer: `${origin}/issuer`,
    jwksUri: new URL(`${origin}${path}`),
    timeoutMs: 2_000,
    ...extra,
  });
  const fetches = (path = '/jwks') => requests.get(path) ?? 0;

  it('fetches on first use, once for concurrent callers, and not again within the cooldown', async () => {
    const keys = cache().keysOf(source('/jwks'));
    expect(keys.current).to.equal(undefined);
    const snapshots = await Promise.all(Array.from({ length: 5 }, () => keys.usable()));
    expect(fetches()).to.equal(1);
    expect(new Set(snapshots).size).to.equal(1);
    expect(snapshots[0]!.fetchedAt).to.equal(clock);
    expect(events).to.deep.equal([{ idp: 'acme', ok: true }]);

    clock += COOLDOWN_MS - 1;
    await keys.refresh();
    expect(fetches()).to.equal(1);
    expect(keys.nextFetchAt).to.equal(1_000_000 + COOLDOWN_MS);
    clock += 1;
    await keys.refresh();
    expect(fetches()).to.equal(2);
  });

  it('refetches keys older than maxAgeMs before use, and keeps stale keys when the refetch fails', async () => {
    const keys = cache({ maxAgeMs: 60_000 }).keysOf(source('/jwks'));
    const first = await keys.usable();
    clock += 60_000;
    expect(await keys.usable()).to.equal(first);
    clock += 1;
    const second = await keys.usable();
    expect(fetches()).to.equal(2);
    expect(second).to.not.equal(first);
    expect(second!.fetchedAt).to.equal(clock);

    jwksDown = true;
    clock += 60_001;
    expect(await keys.usable()).to.equal(second);
    expect(fetches()).to.equal(3);
    expect(keys.lastFetchFailed).to.equal(true);
    expect(events.at(-1)).to.deep.equal({ idp: 'acme', ok: false, problem: 'jwks_uri: HTTP 503' });
  });

  it('fetches again for a kid the set lacks, at most once per cooldown however many tokens name one', async () => {
    const keys = cache().keysOf(source('/jwks'));
    expect(await keys.getKey({ alg: 'RS256', kid: 'k1' }, NO_TOKEN)).to.have.property('type', 'public');
    expect(fetches()).to.equal(1);

    // Within the cooldown the IdP published k2: a token signed with it waits for the cooldown.
    published = [k1, k2];
    clock += 1_000;
    await expectNoKey(keys.getKey({ alg: 'RS256', kid: 'k2' }, NO_TOKEN));
    expect(fetches()).to.equal(1);

    clock += COOLDOWN_MS;
    expect(await keys.getKey({ alg: 'RS256', kid: 'k2' }, NO_TOKEN)).to.have.property('type', 'public');
    expect(fetches()).to.equal(2);

    // A flood of unknown kids right after: no fetch.
    for (let index = 0; index < 20; index += 1) await expectNoKey(keys.getKey({ alg: 'RS256', kid: `junk-${index}` }, NO_TOKEN));
    expect(fetches()).to.equal(2);
    clock += COOLDOWN_MS;
    await expectNoKey(keys.getKey({ alg: 'RS256', kid: 'junk' }, NO_TOKEN));
    expect(fetches()).to.equal(3);
  });

  it('newerThan: a newer set when one is to be had, else nothing', async () => {
    const keys = cache().keysOf(source('/jwks'));
    const first = (await keys.usable())!;
    expect(await keys.newerThan(first)).to.equal(undefined);
    expect(fetches()).to.equal(1);
    clock += COOLDOWN_MS;
    const second = await keys.newerThan(first);
    expect(second).to.not.equal(undefined);
    expect(second).to.equal(keys.current);
    expect(fetches()).to.equal(2);
    // Someone else already got a newer set than `first`: it is handed over without a fetch.
    expect(await keys.newerThan(first)).to.equal(second);
    expect(fetches()).to.equal(2);
  });

  it('shares one fetch between sources of the same URL, telling each of them', async () => {
    const shared = cache();
    const acme = shared.keysOf(source('/jwks'));
    const beta = shared.keysOf(source('/jwks', { name: 'beta', timeoutMs: 5_000 }));
    const other = shared.keysOf(source('/other-jwks', { name: 'gamma' }));
    expect(beta).to.equal(acme);
    expect(other).to.not.equal(acme);
    await Promise.all([acme.usable(), beta.usable(), other.usable()]);
    expect(fetches('/jwks')).to.equal(1);
    expect(fetches('/other-jwks')).to.equal(1);
    expect(events).to.have.deep.members([
      { idp: 'acme', ok: true },
      { idp: 'beta', ok: true },
      { idp: 'gamma', ok: true },
    ]);
    // Another cache (another caller, its own cooldown) fetches for itself.
    await cache().keysOf(source('/jwks')).usable();
    expect(fetches('/jwks')).to.equal(2);
  });

  it(`stops reading an answer over ${MAX_DOCUMENT_BYTES} bytes`, async () => {
    const keys = cache().keysOf(source('/big'));
    expect(await keys.usable()).to.equal(undefined);
    expect(events).to.deep.equal([{ idp: 'acme', ok: false, problem: `jwks_uri: answer over ${MAX_DOCUMENT_BYTES} bytes` }]);
    expect(keys.lastFetchFailed).to.equal(true);
  });

  it('gives up on an answer that does not come, or stops coming, within the timeout', async () => {
    const started = Date.now();
    const silent = cache().keysOf(source('/never', { timeoutMs: 300 }));
    const stalled = cache().keysOf(source('/stalls', { name: 'stalled', timeoutMs: 300 }));
    await Promise.all([silent.usable(), stalled.usable()]);
    expect(Date.now() - started).to.be.below(5_000);
    expect(events).to.have.deep.members([
      { idp: 'acme', ok: false, problem: 'jwks_uri: timeout' },
      { idp: 'stalled', ok: false, problem: 'jwks_uri: answer cut off' },
    ]);
  });

  it('without keys (the issuer is down), getKey says so, and asks again only after the cooldown', async () => {
    const keys = cache().keysOf(source('/down'));
    for (let index = 0; index < 5; index += 1) {
      const error = await rejection(keys.getKey({ alg: 'RS256', kid: 'k1' }, NO_TOKEN));
      expect(error).to.be.instanceOf(JwksUnavailable).and.to.have.property('code', 'KEYS_UNAVAILABLE');
    }
    expect(fetches('/down')).to.equal(1);
    expect(events).to.deep.equal([{ idp: 'acme', ok: false, problem: 'jwks_uri: HTTP 503' }]);
    clock += COOLDOWN_MS;
    await keys.usable();
    expect(fetches('/down')).to.equal(2);
  });

  it("finds the set through the issuer's discovery document, only when it names the pinned issuer", async () => {
    const shared = cache();
    const keys = shared.keysOf(source('', { jwksUri: undefined }));
    expect(await keys.usable()).to.not.equal(undefined);
    expect(fetches('/issuer/.well-known/openid-configuration')).to.equal(1);
    expect(fetches('/jwks')).to.equal(1);
    // Refetches go to the jwks_uri found; discovery is not asked again.
    clock += COOLDOWN_MS;
    await keys.refresh();
    expect(fetches('/issuer/.well-known/openid-configuration')).to.equal(1);
    expect(fetches('/jwks')).to.equal(2);

    const impostor = shared.keysOf(source('', { name: 'impostor', issuer: `${origin}/impostor`, jwksUri: undefined }));
    expect(impostor).to.not.equal(keys);
    expect(await impostor.usable()).to.equal(undefined);
    expect(events.at(-1)).to.deep.equal({ idp: 'impostor', ok: false, problem: 'discovery: not a discovery document for the pinned issuer (HTTP 200)' });
    expect(fetches('/jwks')).to.equal(2);
  });

  it('verifies with asymmetric algorithms only: no key for HMAC or none, even with a secret in the set', async () => {
    expect(ASYMMETRIC_ALGORITHMS.filter((alg) => /^HS|none/i.test(alg))).to.deep.equal([]);
    const keys = cache().keysOf(source('/with-secret'));
    for (const alg of ['HS256', 'none']) {
      const error = await rejection(keys.getKey({ alg, kid: 's1' }, NO_TOKEN));
      expect(error, alg).to.be.instanceOf(errors.JOSEAlgNotAllowed);
    }
    // The set itself hands out no secret either (what the verifier's own lookup relies on).
    const snapshot = (await keys.usable())!;
    const error = await rejection(snapshot.lookup({ alg: 'HS256', kid: 's1' }, NO_TOKEN));
    expect(error).to.be.instanceOf(errors.JOSENotSupported);
    expect(await keys.getKey({ alg: 'RS256', kid: 'k1' }, NO_TOKEN)).to.have.property('type', 'public');
  });
});

/** What a lookup failed with; undefined when it found a key. */
function rejection(lookup: unknown): Promise<unknown> {
  return Promise.resolve(lookup).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
}

async function expectNoKey(lookup: unknown): Promise<void> {
  expect(await rejection(lookup)).to.be.instanceOf(errors.JWKSNoMatchingKey);
}
