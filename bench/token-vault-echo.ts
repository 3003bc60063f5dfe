// The floor for the GetGrant benchmark: a TokenVault server that answers every GetGrant with the
// same canned grant, doing no work at all. Same gRPC stack, same machine, same load generator.
//   node dist/bench/token-vault-echo.js PORT
import * as grpc from '@grpc/grpc-js';
import { loadTokenVault } from '../src/api/protocol.js';

const port = Number(process.argv[2]);
const grant = { idp: 'bench', subject: 'user-0', status: 'GRANT_STATUS_ACTIVE', access_token: 'a'.repeat(1100), id_token: 'b'.repeat(1000), scope: ['openid'] };
const server = new grpc.Server();
server.addService(loadTokenVault().service, {
  GetGrant: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { grant, refreshed: false }),
});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) throw error;
  process.stdout.write('echo ready\n');
});
process.on('SIGTERM', () => server.forceShutdown());
