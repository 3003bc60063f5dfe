// Writes deploy/envoy-gateway/ and deploy/istio/: what `token-tap envoy-gateway` renders for two
// example IdPs. test/integration/gateway-manifests.test.ts checks the files stay equal to it.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderGatewayCommand } from '../src/envoyconfig/gateway-cli.js';

const EXAMPLE_IDPS = [
  'entra=https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token',
  'google=https://oauth2.googleapis.com/token',
];

/** File (from the repository root) → its content. */
export function gatewayExampleFiles(): Record<string, string> {
  const base = { idp: EXAMPLE_IDPS, namespace: 'token-tap', hostname: ['tokens.example.com'] };
  const render = (flags: Partial<Parameters<typeof renderGatewayCommand>[0]>) =>
    renderGatewayCommand({ ...base, mode: 'observability', gateway: 'envoy-gateway-system/eg', istio: false, ...flags }, Error);
  return {
    'deploy/envoy-gateway/token-tap.yaml': render({}),
    'deploy/envoy-gateway/token-tap.buffered.yaml': render({ mode: 'buffered' }),
    'deploy/istio/token-tap.yaml': render({ istio: true, gateway: 'istio-system/token-tap' }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  for (const [file, content] of Object.entries(gatewayExampleFiles())) {
    mkdirSync(`${root}${file.slice(0, file.lastIndexOf('/'))}`, { recursive: true });
    writeFileSync(`${root}${file}`, content);
    process.stdout.write(`wrote ${file}\n`);
  }
}
