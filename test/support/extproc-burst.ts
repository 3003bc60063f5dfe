// Plays Envoy from its own process: waits for a line on stdin, then sends COUNT complete token
// responses (observability mode) on COUNT streams to the sidecar at ADDRESS, and prints how many
// streams ended. Its own process, so a test may block its own event loop meanwhile.
//   node dist/test/support/extproc-burst.js ADDRESS COUNT
import { once } from 'node:events';
import { connectExtProc, openStream } from './extproc-client.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
const client = connectExtProc(address!);
await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 5_000, (error) => (error ? reject(error) : resolve())));
process.stdout.write('ready\n');
await once(process.stdin, 'data');
let ended = 0;
await Promise.all(
  Array.from({ length: count }, async (_, index) => {
    const call = openStream(client, 'acme');
    const body = Buffer.from(JSON.stringify({ access_token: `at-burst-${index}`, token_type: 'Bearer', expires_in: 60 }));
    call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } }, observability_mode: true });
    call.write({ response_body: { body, end_of_stream: true }, observability_mode: true });
    call.end();
    await once(call, 'status');
    ended += 1;
  }),
);
process.stdout.write(`ended ${ended}\n`);
client.close();
