// Before any test that needs Postgres: find one, or say in one line what to install or set.
// TOKEN_TAP_TEST_ADMIN_URL given: that server, or stop. Else the machine's server on 127.0.0.1:5432
// when it answers (CI), else a throwaway cluster from the machine's initdb/pg_ctl, else stop.
// Kept apart from postgres.ts, which reads TOKEN_TAP_TEST_ADMIN_URL when it is first imported.
import pg from 'pg';
import { startThrowawayPostgres } from './throwaway-postgres.js';

export const MACHINE_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

export class PostgresUnavailable extends Error {
  override name = 'PostgresUnavailable';
}

function where(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || 5432}`;
}

async function answers(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface TestPostgres {
  url: string;
  source: 'configured' | 'machine' | 'throwaway';
}

/** `probeUrl`: where the machine's server would be (tests of this function point it at a closed port). */
export async function ensureTestPostgres(env: NodeJS.ProcessEnv, probeUrl = MACHINE_POSTGRES_URL): Promise<TestPostgres> {
  const configured = env.TOKEN_TAP_TEST_ADMIN_URL;
  if (configured) {
    const problem = await answers(configured);
    if (problem)
      throw new PostgresUnavailable(
        `no Postgres answers at TOKEN_TAP_TEST_ADMIN_URL (${where(configured)}: ${problem}): start it, or unset TOKEN_TAP_TEST_ADMIN_URL to use 127.0.0.1:5432 or a throwaway cluster`,
      );
    return { url: configured, source: 'configured' };
  }
  const machineProblem = await answers(probeUrl);
  if (!machineProblem) return { url: probeUrl, source: 'machine' };
  try {
    const cluster = await startThrowawayPostgres();
    return { url: cluster.url('postgres'), source: 'throwaway' };
  } catch (error) {
    const reason = (error as Error).message.split('\n')[0];
    throw new PostgresUnavailable(
      `no Postgres at ${where(probeUrl)} (${machineProblem}) and no throwaway one could be started (${reason}): install the Postgres server (apt-get install postgresql) or set TOKEN_TAP_TEST_ADMIN_URL=postgres://USER@HOST:PORT/DB (a user that may create databases)`,
    );
  }
}
