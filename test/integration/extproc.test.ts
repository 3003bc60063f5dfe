// The sidecar in process, spoken to over real gRPC as Envoy would, writing to the real Postgres.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import type { ProcessingRequest, ProcessingResponse } from '../../src/extproc/protocol.js';
import type { Sidecar } from '../../src/sidecar.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { connectExtProc, openStream } from '../support/extproc-client.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { fakeJwt } from '../support/jwt.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { metricValue } from '../support/metrics.js';

interface StreamResult {
  replies: ProcessingResponse[];
  status: grpc.StatusObject | undefined;
}

/** Plays Envoy's side of one ext_proc stream: sends the messages, half-closes, collects replies. */
async function playEnvoy(address: string, messages: ProcessingRequest[], idp: string | undefined): Promise<StreamResult> {
  const client = connectExtProc(address);
  const call = openStream(client, idp);
  const replies: ProcessingResponse[] = [];
  let status: grpc.StatusObject | undefined;
  const done = new Promise<void>((resolve) => {
    call.on('data', (reply: ProcessingResponse) => replies.push(reply));
    call.on('status', (value: grpc.StatusObject) => {
      status = value;
      resolve();
    });
  });
  for (const message of messages) call.write(message);
  call.end();
  await done;
  client.close();
  return { replies, status };
}

function tokenResponse(body: object, observability: boolean): ProcessingRequest[] {
  const text = Buffer.from(JSON.stringify(body));
  return [
    {
      response_headers: {
        headers: {
          headers: [
            { key: ':status', raw_value: Buffer.from('200') },
            { key: 'content-type', raw_value: Buffer.from('application/json') },
          ],
        },
      },
      observability_mode: observability,
    },
    { response_body: { body: text.subarray(0, 10) }, observability_mode: observability },
    { response_body: { body: text.subarray(10), end_of_stream: true }, observability_mode: observability },
  ];
}

describe('ext_proc server with Postgres (integration)', function () {
  this.timeout(20_000);
  let db: TestDatabase;
  let running: InProcessSidecar;
  let sidecar: Sidecar;
  let address: string;

  before(async () => {
    db = await createTestDatabase('extproc');
    running = await startInProcessSidecar({ DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1') }, 'silent');
    sidecar = running.sidecar;
    address = `127.0.0.1:${sidecar.address.port}`;
  });
  after(async () => {
    await running?.close();
    await db?.drop();
  });

  it('buffered mode: replies CONTINUE to each message, in kind, and stores the grant', async () => {
    const idToken = fakeJwt({ iss: 'https://idp.example', sub: 'bob', aud: 'okta', exp: 4102444800 });
    const result = await playEnvoy(address, tokenResponse({ access_token: 'at-b', id_token: idToken, refresh_token: 'rt-b', expires_in: 60 }, false), 'acme');
    expect(result.replies).to.deep.equal([
      { response_headers: { response: {} }, response: 'response_headers' },
      { response_body: { response: {} }, response: 'response_body' },
      { response_body: { response: {} }, response: 'response_body' },
    ]);
    expect(result.status?.code).to.equal(grpc.status.OK);
    const grant = await waitFor('the grant', () => sidecar.store.findGrant('acme', 'bob'));
    expect(grant).to.include({ accessToken: 'at-b', refreshToken: 'rt-b', idToken, issuer: 'https://idp.example', clientId: 'okta' });
    expect(grant.accessTokenExpiresAt!.getTime() - grant.capturedAt.getTime()).to.equal(60_000);
  });

  it('observability mode: never replies, ends the stream itself once the response is complete', async () => {
    const idToken = fakeJwt({ sub: 'carol', exp: 4102444800 });
    const result = await playEnvoy(address, tokenResponse({ access_token: 'at-c', id_token: idToken }, true), 'acme');
    expect(result.replies).to.deep.equal([]);
    expect(result.status?.code).to.equal(grpc.status.OK);
    const grant = await waitFor('the grant', () => sidecar.store.findGrant('acme', 'carol'));
    expect(grant.accessToken).to.equal('at-c');
    expect(grant.refreshToken).to.equal(null);
  });

  it('a later login replaces the tokens; a response without refresh_token or id_token keeps the stored ones', async () => {
    const firstId = fakeJwt({ sub: 'dave', exp: 4102444800 });
    await playEnvoy(address, tokenResponse({ access_token: 'at-1', id_token: firstId, refresh_token: 'rt-1' }, false), 'acme');
    await waitFor('first grant', () => sidecar.store.findGrant('acme', 'dave'));
    const secondId = fakeJwt({ sub: 'dave', exp: 4102444801, email: 'dave@example.test' });
    await playEnvoy(address, tokenResponse({ access_token: 'at-2', id_token: secondId, refresh_token: 'rt-2' }, false), 'acme');
    const second = await waitFor('second grant', async () => {
      const grant = await sidecar.store.findGrant('acme', 'dave');
      return grant?.version === 2 ? grant : undefined;
    });
    expect(second).to.include({ accessToken: 'at-2', refreshToken: 'rt-2', idToken: secondId, email: 'dave@example.test' });
    // A refresh-grant response naming the same user by a new id_token but without a refresh token.
    const thirdId = fakeJwt({ sub: 'dave', exp: 4102444802 });
    await playEnvoy(address, tokenResponse({ access_token: 'at-3', id_token: thirdId, expires_in: 30 }, false), 'acme');
    const third = await waitFor('third grant', async () => {
      const grant = await sidecar.store.findGrant('acme', 'dave');
      return grant?.version === 3 ? grant : undefined;
    });
    expect(third).to.include({ accessToken: 'at-3', refreshToken: 'rt-2', idToken: thirdId });
    expect(third.keyId).to.equal('k1');
  });

  it('a response on a route that names no IdP is counted and not stored', async () => {
    const before = await metricValue(sidecar.metrics, 'unnamedRoutes');
    const idToken = fakeJwt({ sub: 'erin', exp: 4102444800 });
    await playEnvoy(address, tokenResponse({ access_token: 'at-e', id_token: idToken }, false), undefined);
    await waitFor('the unnamed-route counter', async () => ((await metricValue(sidecar.metrics, 'unnamedRoutes')) > before ? true : undefined));
    await sidecar.pump.drain(1_000);
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM grants WHERE subject = 'erin'");
    expect(rows[0].n).to.equal(0);
  });

  it('records an IdP error as an idp_error event with no grant', async () => {
    const messages: ProcessingRequest[] = [
      { response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('400') }] } } },
      { response_body: { body: Buffer.from('{"error":"invalid_grant"}'), end_of_stream: true } },
    ];
    await playEnvoy(address, messages, 'acme');
    const rows = await waitFor('the event', async () => {
      const result = await db.pool.query("SELECT outcome, error_code, http_status, subject FROM capture_events WHERE outcome = 'idp_error'");
      return result.rows.length > 0 ? result.rows : undefined;
    });
    expect(rows).to.deep.equal([{ outcome: 'idp_error', error_code: 'invalid_grant', http_status: 400, subject: null }]);
  });

  it('a stream cancelled mid-body is a normal end: no error, recorded as incomplete, and the incomplete stream is counted', async () => {
    const incompleteBefore = await metricValue(sidecar.metrics, 'extProcStreamsIncomplete');
    const client = connectExtProc(address);
    const call = openStream(client, 'acme');
    call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } } });
    call.write({ response_body: { body: Buffer.from('{"access_tok') } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    call.cancel();
    client.close();
    const rows = await waitFor('the incomplete event', async () => {
      const result = await db.pool.query("SELECT outcome, detail FROM capture_events WHERE outcome = 'incomplete' AND idp = 'acme'");
      return result.rows.length > 0 ? result.rows : undefined;
    });
    expect(rows).to.deep.equal([{ outcome: 'incomplete', detail: 'the stream ended before the whole response arrived' }]);
    expect(await metricValue(sidecar.metrics, 'extProcStreamErrors')).to.equal(0);
    expect((await metricValue(sidecar.metrics, 'extProcStreamsIncomplete')) - incompleteBefore).to.equal(1);
    expect(await metricValue(sidecar.metrics, 'captures', { idp: 'acme', outcome: 'incomplete' })).to.equal(1);
  });

  it('a form body cut short, which still parses, changes no grant: the stored refresh token stays whole', async () => {
    const idToken = fakeJwt({ sub: 'frank', exp: 4102444800 });
    const whole = 'rt-frank-0123456789abcdef';
    await playEnvoy(address, tokenResponse({ access_token: 'at-f1', id_token: idToken, refresh_token: whole }, false), 'cut');
    await waitFor('the first grant', () => sidecar.store.findGrant('cut', 'frank'));
    // Envoy gave up on the stream inside the refresh token: no end_of_stream, no content-length.
    const client = connectExtProc(address);
    const call = openStream(client, 'cut');
    call.write({
      response_headers: {
        headers: {
          headers: [
            { key: ':status', raw_value: Buffer.from('200') },
            { key: 'content-type', raw_value: Buffer.from('application/x-www-form-urlencoded') },
          ],
        },
      },
    });
    call.write({ response_body: { body: Buffer.from(`access_token=at-f2&id_token=${idToken}&refresh_token=${whole.slice(0, 9)}`) } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    call.cancel();
    client.close();
    const events = await waitFor('the second event', async () => {
      const result = await db.pool.query("SELECT outcome FROM capture_events WHERE idp = 'cut' ORDER BY id");
      return result.rows.length >= 2 ? result.rows.map((row) => row.outcome) : undefined;
    });
    const grant = await sidecar.store.findGrant('cut', 'frank');
    expect(grant).to.include({ accessToken: 'at-f1', refreshToken: whole, version: 1 });
    expect(events).to.deep.equal(['stored', 'incomplete']);
  });
});
