// The token exchange's log: the access_events row is the trail of each exchange, so an answered
// one is logged only at debug, a refused one at info; one answered unavailable or internal at warn. Against the
// listener on loopback, with the operation, the key check and the audit log stood in for.
import { Writable } from 'node:stream';
import { expect } from 'chai';
import pino from 'pino';
import { Registry } from 'prom-client';
import { startExchangeServer } from '../../src/exchange/server.js';
import type { ExchangeResult } from '../../src/operations/exchange.js';

const ID = '0123456789abcdef';
const KEY = `ttk_${ID}_${'A'.repeat(43)}`;
const caller = { apiKeyId: ID, name: 'svc', idps: ['*'], operations: ['exchange'] };

async function exchangeLogged(level: string, result: ExchangeResult): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const audited: unknown[] = [];
  const server = await startExchangeServer({
    listen: { host: '127.0.0.1', port: 0 },
    tls: undefined,
    exchange: { exchange: async () => result },
    authenticator: { authenticateKey: async () => ({ caller }) },
    audit: { record: async (event) => void audited.push(event) },
    refusalAudit: { record: async () => undefined },
    logger: pino({ level }, sink),
    registry: new Registry(),
  });
  try {
    const body = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: 'a.b.c',
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'entra',
    });
    const response = await fetch(`http://127.0.0.1:${server.address.port}/oauth2/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${ID}:${KEY}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    await response.text();
  } finally {
    await server.close();
  }
  expect(audited).to.have.length(1);
  return lines.filter((line) => line.msg === 'token exchange' || line.msg === 'token exchange refused');
}

describe('token exchange: its log line', () => {
  const ok: ExchangeResult = {
    outcome: 'ok',
    token: { access_token: 'upstream', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'Bearer' },
    notes: { idp: 'entra', subject: 'u1', oktaUser: '00u1' },
  };
  const down: ExchangeResult = { outcome: 'unavailable', description: 'try again', notes: { idp: 'entra', detail: 'Postgres unavailable' } };

  it('logs an answered exchange only at debug (its access_events row is the trail), without the token', async () => {
    expect(await exchangeLogged('info', ok)).to.deep.equal([]);
    const [line, ...rest] = await exchangeLogged('debug', ok);
    expect(rest).to.deep.equal([]);
    expect(line).to.include({ level: 20, idp: 'entra', subject: 'u1', oktaUser: '00u1', outcome: 'ok', status: 200 });
    expect(JSON.stringify(line)).to.not.include('upstream');
  });

  it('logs a refused exchange at info (a probe the operator should see), without the token', async () => {
    const refused: ExchangeResult = { outcome: 'wrong_idp', description: 'no', notes: { idp: 'entra', detail: 'names another Okta IdP' } };
    const [line, ...rest] = await exchangeLogged('info', refused);
    expect(rest).to.deep.equal([]);
    expect(line).to.include({ level: 30, msg: 'token exchange refused', outcome: 'wrong_idp', status: 400 });
    expect(JSON.stringify(line)).to.not.include('a.b.c');
  });

  it('logs one answered unavailable or internal at warn', async () => {
    const [line, ...rest] = await exchangeLogged('info', down);
    expect(rest).to.deep.equal([]);
    expect(line).to.include({ level: 40, outcome: 'unavailable', status: 503 });
  });
});
