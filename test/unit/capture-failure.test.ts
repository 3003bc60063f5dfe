// The capture writer's one decision (store/errors.ts): is Postgres unavailable (retry the whole batch
// later) or did this capture fail for itself (set it aside)? And what is said about it: a bounded
// reason naming the SQLSTATE or error class, never the error's message.
import { expect } from 'chai';
import { DecryptError } from '../../src/keys/key-ring.js';
import { describeCaptureFailure, isPostgresUnavailable } from '../../src/store/errors.js';

const pgError = (code: string, message = 'from Postgres') => Object.assign(new Error(message), { code });
const systemError = (code: string, syscall = 'connect') => Object.assign(new Error(`${syscall} ${code} 127.0.0.1:5432`), { code, syscall, errno: -1 });

describe("capture write failures: unavailable or one capture's own", () => {
  const unavailable: Array<[string, unknown]> = [
    ['connection refused', systemError('ECONNREFUSED')],
    ['connection reset', systemError('ECONNRESET', 'read')],
    ['DNS failure', systemError('EAI_AGAIN', 'getaddrinfo')],
    ['broken pipe', systemError('EPIPE', 'write')],
    ['pool connect timeout', new Error('timeout exceeded when trying to connect')],
    ['connect timeout', new Error('Connection terminated due to connection timeout')],
    ['query without an answer', new Error('Query read timeout')],
    ['backend gone', new Error('Connection terminated unexpectedly')],
    ['client broken', new Error('Client has encountered a connection error and is not queryable')],
    ['TLS refused', Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })],
    ...['08006', '08001', '53100', '53200', '53300', '57P01', '57P03', '57014', '40001', '40P01', '55P03', '58030', '42P01', '42501'].map(
      (code): [string, unknown] => [`SQLSTATE ${code}`, pgError(code)],
    ),
  ];
  for (const [what, error] of unavailable) {
    it(`${what}: Postgres is unavailable (the batch is retried)`, () => expect(isPostgresUnavailable(error)).to.equal(true));
  }

  const own: Array<[string, unknown, string, string]> = [
    ['a NUL byte', pgError('22021'), 'refused_by_postgres', 'Postgres refused it (SQLSTATE 22021)'],
    ['a check violation', pgError('23514'), 'refused_by_postgres', 'Postgres refused it (SQLSTATE 23514)'],
    [
      'an index row over the btree limit',
      pgError('54000', 'index row size 3016 exceeds btree version 4 maximum 2704'),
      'refused_by_postgres',
      'Postgres refused it (SQLSTATE 54000)',
    ],
    ['a syntax error (a bug)', pgError('42601'), 'refused_by_postgres', 'Postgres refused it (SQLSTATE 42601)'],
    ['an internal error', pgError('XX000'), 'refused_by_postgres', 'Postgres refused it (SQLSTATE XX000)'],
    [
      'a held grant under other key material',
      new DecryptError('pending ciphertext does not open under key k1'),
      'unreadable',
      'cannot open a held grant (DecryptError)',
    ],
    ['a TypeError', new TypeError("Cannot read properties of undefined (reading 'accessToken')"), 'failed', 'writing it failed (TypeError)'],
    [
      'a Node ERR_ code (a bug)',
      Object.assign(new TypeError('The "data" argument must be of type string'), { code: 'ERR_INVALID_ARG_TYPE' }),
      'failed',
      'writing it failed (TypeError)',
    ],
    ['a thrown string', 'oops', 'failed', 'writing it failed (Error)'],
  ];
  for (const [what, error, label, reason] of own) {
    it(`${what}: the capture's own failure, labelled ${label}`, () => {
      expect(isPostgresUnavailable(error)).to.equal(false);
      expect(describeCaptureFailure(error)).to.deep.equal({ label, reason });
    });
  }

  it('never quotes the error message, which may hold a value', () => {
    const error = Object.assign(new Error('invalid input syntax for type uuid: "secret-token-value"'), { code: '22P02', name: 'secret-token-value' });
    expect(JSON.stringify(describeCaptureFailure(error))).to.not.contain('secret-token-value');
  });
});
