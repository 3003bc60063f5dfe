// The embedded default for the demo: PGlite (Postgres compiled to WASM) served over the Postgres
// wire protocol, so the sidecar runs the same migrations and SQL through `pg` unchanged.
// PGlite is a single session: the sidecar must use one connection (pool size 1).
import { mkdirSync } from 'node:fs';

export interface EmbeddedPostgres {
  databaseUrl: string;
  dataDir: string;
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(dataDir: string, port = 0): Promise<EmbeddedPostgres> {
  mkdirSync(dataDir, { recursive: true });
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
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
