// The embedded default for the demo: PGlite (Postgres compiled to WASM) served over the Postgres
// wire protocol, so the sidecar runs the same migrations and SQL through `pg` unchanged.
// PGlite is a single session: the sidecar must use one connection (pool size 1).
import { mkdirSync } from 'node:fs';
import { asError } from '../lib/errors.js';

export interface EmbeddedPostgres {
  databaseUrl: string;
  dataDir: string;
  stop(): Promise<void>;
}

// PGlite is a dev dependency: `npm ci` in a checkout installs it, the sidecar image
// (`npm ci --omit=dev`) leaves it out, so a missing one is named with what to do instead.
async function loadPglite() {
  try {
    const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([import('@electric-sql/pglite'), import('@electric-sql/pglite-socket')]);
    return { PGlite, PGLiteSocketServer };
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new Error(
      'the embedded Postgres (PGlite: @electric-sql/pglite, @electric-sql/pglite-socket) is not installed; it is a dev dependency, which the sidecar image leaves out. ' +
        `Run the demo from a checkout after \`npm ci\` (\`npm run demo\`), or set DATABASE_URL to a Postgres (${asError(error).message})`,
      { cause: error },
    );
  }
}

export async function startEmbeddedPostgres(dataDir: string, port = 0): Promise<EmbeddedPostgres> {
  mkdirSync(dataDir, { recursive: true });
  const { PGlite, PGLiteSocketServer } = await loadPglite();
  const db = await PGlite.create(dataDir);
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port, maxConnections: 1 });
  await server.start();
  const address = server.getServerConn();
  return {
    databaseUrl: `postgres://postgres@${address}/postgres?sslmode=disable`,
    dataDir,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}
