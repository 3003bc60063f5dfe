// The one error model (lib/errors.ts): each edge maps an error by its outcome in one function (the
// API to a gRPC status and an answer, the CLI to an exit code), and describeError gives log lines
// what an error says without what may quote a value or a secret.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import pg from 'pg';
import { AccessDenied } from '../../src/api/auth.js';
import { ApiKeyInputError } from '../../src/api/api-keys.js';
import { grpcStatusOf, refusalOf } from '../../src/api/errors.js';
import { exitCodeOf, UsageError } from '../../src/cli/main.js';
import { ConfigError } from '../../src/config/values.js';
import { IdpCallError } from '../../src/idp/client.js';
import { JwksUnavailable } from '../../src/idp/jwks.js';
import { SpoolLockedError } from '../../src/ingest/spool.js';
import { DecryptError, KeyRingError } from '../../src/keys/key-ring.js';
import { describeError } from '../../src/lib/error-description.js';
import { asError, outcomeOf, TokenTapError } from '../../src/lib/errors.js';
import { RotationError } from '../../src/operations/key-rotation.js';
import { VaultError } from '../../src/store/errors.js';
import { SchemaTooNewError } from '../../src/store/migrate.js';

const SECRET = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln';

/** An error as pg's parser makes it from Postgres's ErrorResponse (pg-protocol's DatabaseError). */
function postgresError(message: string, fields: Record<string, string>): Error {
  return Object.assign(new pg.DatabaseError(message, 100, 'error'), { severity: 'ERROR', ...fields });
}

describe('one error model', () => {
  describe('outcomes', () => {
    it('each error class carries the outcome the edges map, and keeps its name', () => {
      const cases: Array<[Error, string, string]> = [
        [new ConfigError(['x is not set']), 'ConfigError', 'misconfigured'],
        [new KeyRingError('TOKEN_TAP_KEYS is empty'), 'KeyRingError', 'misconfigured'],
        [new UsageError('bad flag'), 'UsageError', 'invalid_argument'],
        [new ApiKeyInputError('bad name'), 'ApiKeyInputError', 'invalid_argument'],
        [new AccessDenied('no', 'permission_denied', 'detail'), 'AccessDenied', 'permission_denied'],
        [new VaultError('gone', 'not_found'), 'VaultError', 'not_found'],
        [new DecryptError('key not in ring'), 'DecryptError', 'failed_precondition'],
        [new RotationError('missing key'), 'RotationError', 'failed_precondition'],
        [new SchemaTooNewError('newer'), 'SchemaTooNewError', 'failed_precondition'],
        [new SpoolLockedError('held'), 'SpoolLockedError', 'unavailable'],
        [new IdpCallError('down', 'unavailable'), 'IdpCallError', 'unavailable'],
        [new IdpCallError('no', 'refused', 'invalid_grant'), 'IdpCallError', 'failed_precondition'],
        [new JwksUnavailable(), 'JwksUnavailable', 'unavailable'],
      ];
      for (const [error, name, outcome] of cases) {
        expect(error, name).to.be.instanceOf(TokenTapError);
        expect(error.name).to.equal(name);
        expect(outcomeOf(error), name).to.equal(outcome);
      }
      expect(outcomeOf(new Error('anything'))).to.equal('internal');
      expect(outcomeOf('a string')).to.equal('internal');
    });

    it('asError reads any thrown value as an Error', () => {
      const error = new Error('as is');
      expect(asError(error)).to.equal(error);
      expect(asError('text').message).to.equal('text');
      expect(asError({ message: 'from an object' }).message).to.equal('from an object');
      expect(asError(undefined).message).to.equal('undefined');
    });
  });

  describe('the TokenVault API: refusalOf and grpcStatusOf', () => {
    it('answers an exposable error with its own message, and the status of its outcome', () => {
      const refusal = refusalOf(new VaultError('no grant stored for IdP "a" and subject "b"', 'not_found'));
      expect(refusal).to.deep.equal({
        outcome: 'not_found',
        message: 'no grant stored for IdP "a" and subject "b"',
        detail: 'no grant stored for IdP "a" and subject "b"',
        unexpected: false,
      });
      expect(grpcStatusOf(refusal.outcome)).to.equal(grpc.status.NOT_FOUND);
      const denied = refusalOf(new AccessDenied('a valid API key is required', 'unauthenticated', 'unknown key id', 'k1'));
      expect(denied).to.include({ outcome: 'unauthenticated', message: 'a valid API key is required', detail: 'unknown key id' });
      expect(grpcStatusOf(denied.outcome)).to.equal(grpc.status.UNAUTHENTICATED);
      expect(grpcStatusOf(refusalOf(new DecryptError('key "k0" is not in TOKEN_TAP_KEYS')).outcome)).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(grpcStatusOf(refusalOf(new ApiKeyInputError('bad name')).outcome)).to.equal(grpc.status.INVALID_ARGUMENT);
    });

    it('answers Postgres being unreachable UNAVAILABLE, with no word of its own', () => {
      const refusal = refusalOf(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', syscall: 'connect' }));
      expect(refusal).to.deep.equal({
        outcome: 'unavailable',
        message: 'Postgres cannot be reached; try again',
        detail: 'Postgres unavailable (ECONNREFUSED)',
        unexpected: false,
      });
      expect(grpcStatusOf(refusal.outcome)).to.equal(grpc.status.UNAVAILABLE);
    });

    it('answers anything else INTERNAL with a generic message, even an error of ours not meant to be shown', () => {
      for (const error of [
        new Error(`upstream said ${SECRET}`),
        new IdpCallError('token endpoint of "a" failed', 'unavailable'),
        postgresError(`invalid input syntax for type uuid: "${SECRET}"`, { code: '22P02' }),
      ]) {
        const refusal = refusalOf(error);
        expect(refusal.outcome).to.equal('internal');
        expect(refusal.message).to.equal('internal error; the sidecar log has the details');
        expect(refusal.unexpected).to.equal(true);
        expect(grpcStatusOf(refusal.outcome)).to.equal(grpc.status.INTERNAL);
      }
      // The audit row's detail is describeError's message: a data exception's value stays out.
      expect(refusalOf(postgresError(`invalid input syntax for type uuid: "${SECRET}"`, { code: '22P02' })).detail).not.to.contain(SECRET);
    });

    it('has a status for every outcome an audit row can hold', () => {
      expect(grpcStatusOf('ok')).to.equal(grpc.status.OK);
      expect(grpcStatusOf('cancelled')).to.equal(grpc.status.CANCELLED);
      expect(grpcStatusOf('permission_denied')).to.equal(grpc.status.PERMISSION_DENIED);
      expect(grpcStatusOf('misconfigured')).to.equal(grpc.status.FAILED_PRECONDITION);
    });
  });

  describe('the CLI: exitCodeOf', () => {
    it('exits 78 (EX_CONFIG) for settings that cannot be used, 1 for any other failure', () => {
      expect(exitCodeOf(new ConfigError(['DATABASE_URL is not set']))).to.equal(78);
      expect(exitCodeOf(new KeyRingError('TOKEN_TAP_KEYS is empty'))).to.equal(78);
      for (const error of [
        new UsageError('bad flag'),
        new VaultError('gone', 'not_found'),
        new RotationError('missing key'),
        new SpoolLockedError('held'),
        new Error('boom'),
        'a string',
      ]) {
        expect(exitCodeOf(error), String(error)).to.equal(1);
      }
    });
  });

  describe('describeError', () => {
    it("never gives a Postgres error's detail, where, hint or query: they hold a row's values", () => {
      const error = postgresError('duplicate key value violates unique constraint "grants_pkey"', {
        code: '23505',
        detail: `Key (idp, subject)=(okta, ${SECRET}) already exists.`,
        where: `SQL statement "INSERT ... VALUES ('${SECRET}')"`,
        hint: `the value ${SECRET}`,
        internalQuery: `SELECT '${SECRET}'`,
        schema: 'public',
        table: 'grants',
        constraint: 'grants_pkey',
      });
      const description = describeError(error);
      expect(JSON.stringify(description)).not.to.contain(SECRET);
      expect(description).to.deep.equal({
        name: 'error',
        message: 'duplicate key value violates unique constraint "grants_pkey"',
        code: '23505',
        table: 'grants',
        constraint: 'grants_pkey',
      });
    });

    it('withholds the messages that quote the value they refused: data exceptions and parse errors', () => {
      const dataException = describeError(postgresError(`invalid input syntax for type uuid: "${SECRET}"`, { code: '22P02' }));
      expect(JSON.stringify(dataException)).not.to.contain(SECRET);
      expect(dataException.code).to.equal('22P02');
      let parseError: unknown;
      try {
        JSON.parse(`{"access_token": ${SECRET}}`);
      } catch (error) {
        parseError = error;
      }
      expect(asError(parseError).message, 'the premise: JSON.parse quotes its input').to.contain('eyJhbGci');
      expect(JSON.stringify(describeError(parseError))).not.to.contain('eyJhbGci');
    });

    it('gives name, message and code of ordinary errors, with their Error causes, and no other field', () => {
      const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:443'), { code: 'ECONNREFUSED', body: SECRET });
      const error = Object.assign(new TypeError('fetch failed', { cause }), { request: { body: SECRET }, headers: { authorization: SECRET } });
      const description = describeError(error);
      expect(description).to.deep.equal({
        name: 'TypeError',
        message: 'fetch failed',
        cause: { name: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:443', code: 'ECONNREFUSED' },
      });
      // A cause that is not an Error (a refused response body, as oauth4webapi keeps it) is left out.
      expect(describeError(new Error('server responded with an error', { cause: { error: 'invalid_grant', refresh_token: SECRET } }))).to.deep.equal({
        name: 'Error',
        message: 'server responded with an error',
      });
    });

    it('describes thrown values that are not errors without dumping them, and bounds messages', () => {
      expect(describeError({ access_token: SECRET }).message).not.to.contain(SECRET);
      expect(describeError('plain text')).to.deep.equal({ name: 'Error', message: 'plain text' });
      expect(describeError(undefined)).to.deep.equal({ name: 'Error', message: 'a thrown undefined' });
      expect(describeError(new Error('x'.repeat(10_000))).message.length).to.be.below(600);
    });
  });
});
