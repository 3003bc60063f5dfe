// describeError on the errors a real Postgres sends: what pg carries besides the message (detail,
// where, the statement's parameters) holds a row's values, and none of it reaches a log line.
import { expect } from 'chai';
import { describeError } from '../../src/lib/error-description.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const SECRET = 'rt-0123456789abcdef-secret';

describe('describeError on real Postgres errors', function () {
  this.timeout(20_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('error_description');
    await db.pool.query('CREATE TABLE held (token text PRIMARY KEY, id uuid)');
    await db.pool.query('INSERT INTO held (token) VALUES ($1)', [SECRET]);
  });
  after(async () => db?.drop());

  async function refusal(sql: string, values: unknown[]): Promise<unknown> {
    try {
      await db.pool.query(sql, values);
    } catch (error) {
      return error;
    }
    throw new Error('Postgres took it');
  }

  it('a unique violation: pg puts the value in detail; the description names the constraint only', async () => {
    const error = await refusal('INSERT INTO held (token) VALUES ($1)', [SECRET]);
    expect((error as { detail?: string }).detail, 'the premise: detail quotes the row').to.contain(SECRET);
    const description = describeError(error);
    expect(JSON.stringify(description)).not.to.contain(SECRET);
    expect(description).to.include({ code: '23505', table: 'held', constraint: 'held_pkey' });
  });

  it('a data exception: Postgres quotes the value in the message; the description withholds it', async () => {
    const error = await refusal('SELECT * FROM held WHERE id = $1', [SECRET]);
    expect((error as Error).message, 'the premise: the message quotes the value').to.contain(SECRET);
    const description = describeError(error);
    expect(JSON.stringify(description)).not.to.contain(SECRET);
    expect(description.code).to.equal('22P02');
  });
});
