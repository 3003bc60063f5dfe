// Writes envoy/envoy.<mode>.yaml: the renderer's own output for two example IdPs, with comments
// for operators who edit by hand. test/integration/envoy-config.test.ts checks they stay equal.
import { writeFileSync } from 'node:fs';
import { Document } from 'yaml';
import { parseIdpFlag } from '../src/envoyconfig/flags.js';
import type { EnvoyConfigOptions, ProcessingMode } from '../src/envoyconfig/options.js';
import { renderEnvoyConfig } from '../src/envoyconfig/render.js';
import { ENVOY_READY_PORT } from '../src/contract.js';

export function exampleOptions(mode: ProcessingMode): EnvoyConfigOptions {
  return {
    idps: [
      parseIdpFlag('entra=https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token'),
      parseIdpFlag('google=https://oauth2.googleapis.com/token'),
    ],
    listen: { host: '0.0.0.0', port: 8080 },
    sidecar: { host: '127.0.0.1', port: 50051 },
    admin: { host: '127.0.0.1', port: 9901 },
    ready: { host: '127.0.0.1', port: ENVOY_READY_PORT },
    mode,
  };
}

const HCM = ['static_resources', 'listeners', 0, 'filter_chains', 0, 'filters', 0, 'typed_config'];

export function exampleYaml(mode: ProcessingMode): string {
  const doc = new Document(renderEnvoyConfig(exampleOptions(mode)));
  doc.commentBefore = [
    ` Envoy in front of two IdPs' token endpoints, with the token-tap sidecar in ${mode} mode.`,
    ' Rendered by: token-tap envoy-config --mode ' + mode + ' --idp entra=... --idp google=...',
    ' Okta\'s IdP "Token URL" becomes https://<this Envoy>/idp/<name>/token (put TLS in front, or',
    ' render with TLS: Okta requires https).',
    '',
    ' To add an IdP by hand: copy one route under `routes` (change name, match.path, cluster,',
    ' prefix_rewrite, host_rewrite_literal and the x-token-tap-idp value), then copy its cluster under',
    ' `clusters` (change name, cluster_name, address, port and sni). Validate with:',
    '   .venv/bin/envoy --mode validate -c envoy/envoy.' + mode + '.yaml',
  ].join('\n');
  const routes = doc.getIn([...HCM, 'route_config', 'virtual_hosts', 0, 'routes'], true) as { commentBefore?: string };
  routes.commentBefore = [
    " One route per IdP: /idp/<name>/token is relayed unchanged to the IdP's token path.",
    ' The per-route ext_proc override tells the sidecar which IdP answered (x-token-tap-idp).',
    ' The last route answers 404 for anything else, with ext_proc disabled.',
  ].join('\n');
  const filters = doc.getIn([...HCM, 'http_filters'], true) as { commentBefore?: string };
  filters.commentBefore =
    mode === 'observability'
      ? [
          ' observability mode: Envoy streams the response to the sidecar and never waits for it.',
          ' failure_mode_allow: the login goes on whatever the sidecar does. The request (and the',
          ' client secret in it) is never sent to the sidecar: request headers SKIP, body NONE.',
        ].join('\n')
      : [
          ' buffered mode: Envoy sends the whole response body and waits for one empty CONTINUE reply',
          ' (at most message_timeout, then fails open). The request is never sent to the sidecar.',
        ].join('\n');
  const clusters = doc.getIn(['static_resources', 'clusters'], true) as { commentBefore?: string };
  clusters.commentBefore = ' One cluster per IdP (TLS with SNI and SAN check for https), then the sidecar over HTTP/2.';
  return doc.toString({ lineWidth: 0 });
}

/** Where the sidecar's ext_proc socket sits in the pod and in compose: a volume both containers mount. */
export const SHARED_SOCKET = '/run/token-tap/extproc.sock';

/** The pod's Envoy: TLS on 8443 with the certificate from the token-tap-envoy-tls Secret. */
export function kubernetesYaml(): string {
  const options: EnvoyConfigOptions = {
    ...exampleOptions('observability'),
    sidecar: { socket: SHARED_SOCKET },
    listen: { host: '0.0.0.0', port: 8443 },
    // The kubelet probes the pod's address: the readiness listener answers there (200 or 503, nothing else).
    ready: { host: '0.0.0.0', port: ENVOY_READY_PORT },
    tls: { certFile: '/etc/envoy/tls/tls.crt', keyFile: '/etc/envoy/tls/tls.key' },
  };
  const doc = new Document(renderEnvoyConfig(options));
  doc.commentBefore = [
    ' Envoy for the Kubernetes pod (deploy/kubernetes): https on 8443 with the certificate from the',
    ' token-tap-envoy-tls Secret, the sidecar on a Unix socket in the emptyDir both containers mount.',
    ' Re-render with:',
    '   token-tap envoy-config --listen 0.0.0.0:8443 --tls-cert /etc/envoy/tls/tls.crt \\',
    '     --tls-key /etc/envoy/tls/tls.key --sidecar unix:' + SHARED_SOCKET + ' \\',
    '     --ready 0.0.0.0:' + ENVOY_READY_PORT + ' --idp NAME=URL ...',
    " The Envoy container's readiness probe asks GET :" + ENVOY_READY_PORT + '/ready: 200 only while Envoy sees the',
    ' sidecar healthy, so the pod takes no login before Envoy would hand it to the sidecar.',
    " Prometheus scrapes Envoy's stats at GET :" + ENVOY_READY_PORT + '/stats/prometheus there (deploy/kubernetes/monitoring);',
    ' the admin interface itself stays on 127.0.0.1.',
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}

/** docker-compose.yml's Envoy: the demo IdP service upstream, the sidecar on the shared loopback. */
export function composeYaml(): string {
  const options: EnvoyConfigOptions = {
    ...exampleOptions('observability'),
    idps: [parseIdpFlag('demo=http://demo-idp:3000/token')],
    sidecar: { socket: SHARED_SOCKET },
  };
  const doc = new Document(renderEnvoyConfig(options));
  doc.commentBefore = [
    ' Envoy for docker-compose.yml: /idp/demo/token relayed to the demo-idp service, the sidecar on a',
    ' Unix socket in the volume both containers mount. For your own IdPs, render another and mount it:',
    '   token-tap envoy-config --sidecar unix:' + SHARED_SOCKET + ' --idp NAME=https://... > envoy/envoy.yaml',
    " The envoy service's health check asks GET 127.0.0.1:" + ENVOY_READY_PORT + '/ready: 200 only while Envoy sees the sidecar healthy.',
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}

export const GENERATED_FILES: Record<string, () => string> = {
  'envoy/envoy.compose.yaml': composeYaml,
  'envoy/envoy.observability.yaml': () => exampleYaml('observability'),
  'envoy/envoy.buffered.yaml': () => exampleYaml('buffered'),
  'deploy/kubernetes/envoy.yaml': kubernetesYaml,
};

if (process.argv[1]?.endsWith('render-envoy-examples.js')) {
  for (const [file, render] of Object.entries(GENERATED_FILES)) {
    writeFileSync(file, render());
    process.stdout.write(`wrote ${file}\n`);
  }
}
