// Read a user's upstream tokens from the TokenVault API: the client an internal service writes.
// Copy proto/token_tap/v1/token_vault.proto into your service; it needs @grpc/grpc-js and
// @grpc/proto-loader only. (README, "Point an Okta IdP at Envoy", step 6; test/integration/example-client.test.ts
// runs this file against a real sidecar.)
//
//   TOKEN_TAP_API_KEY=ttk_... node dist/examples/get-grant.js 127.0.0.1:50052 entra alice@example.com
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

const PROTO = fileURLToPath(new URL('../../proto/token_tap/v1/token_vault.proto', import.meta.url));

interface Grant {
  subject: string;
  email: string;
  access_token: string;
  id_token: string;
  access_token_expires_at: { seconds: string } | null;
}

export async function getGrant(address: string, apiKey: string, idp: string, email: string): Promise<Grant> {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const { TokenVault } = (grpc.loadPackageDefinition(definition) as any).token_tap.v1;
  // Use grpc.credentials.createSsl(ca, key, cert) when the API has TLS (TOKEN_TAP_API_TLS_*).
  const client = new TokenVault(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${apiKey}`);
  try {
    return await new Promise<Grant>((resolve, reject) => {
      client.GetGrant({ idp, email }, metadata, { deadline: Date.now() + 5_000 }, (error: grpc.ServiceError | null, response: { grant: Grant }) =>
        // NOT_FOUND: no login captured yet; PERMISSION_DENIED: the key is not allowed this IdP.
        error ? reject(error) : resolve(response.grant),
      );
    });
  } finally {
    client.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [address = '127.0.0.1:50052', idp = 'entra', email = ''] = process.argv.slice(2);
  const grant = await getGrant(address, process.env.TOKEN_TAP_API_KEY ?? '', idp, email);
  const expires = grant.access_token_expires_at ? new Date(Number(grant.access_token_expires_at.seconds) * 1000).toISOString() : 'unknown';
  process.stdout.write(
    `${grant.subject} <${grant.email}>: access token ${grant.access_token.slice(0, 12)}... (expires ${expires}), id_token ${grant.id_token ? 'present' : 'none'}\n`,
  );
}
