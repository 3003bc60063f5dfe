// The real Envoy (src/ops/envoy-process.ts), and Envoy as the tests put it in front of a sidecar:
// the config `token-tap envoy-config` renders, on free loopback ports.
import type { EnvoyConfigOptions } from '../../src/envoyconfig/options.js';
import { renderEnvoyYaml } from '../../src/envoyconfig/render.js';
import { startEnvoy, type RunningEnvoy } from '../../src/ops/envoy-process.js';
import { freePorts } from './ports.js';
import { ENVOY_READY_PATH } from '../../src/contract.js';

export * from '../../src/ops/envoy-process.js';

export interface EnvoyFront {
  envoy: RunningEnvoy;
  listenPort: number;
  /** http://127.0.0.1:<listenPort> (https with TLS). */
  origin: string;
  /** Envoy's readiness endpoint: 200 only while Envoy sees the sidecar healthy (envoyconfig/readiness.ts). */
  readyUrl: string;
}

/** `sidecar` replaces 127.0.0.1:<sidecarPort> (a Unix socket, say). */
export async function startEnvoyFront(
  options: Omit<EnvoyConfigOptions, 'listen' | 'sidecar' | 'admin'> & { sidecarPort: number; sidecar?: EnvoyConfigOptions['sidecar'] },
): Promise<EnvoyFront> {
  const { sidecarPort, sidecar, ...rest } = options;
  const [listenPort, adminPort, readyPort] = await freePorts(3);
  const envoy = await startEnvoy(
    renderEnvoyYaml({
      ...rest,
      listen: { host: '127.0.0.1', port: listenPort },
      sidecar: sidecar ?? { host: '127.0.0.1', port: sidecarPort },
      admin: { host: '127.0.0.1', port: adminPort },
      ready: { host: '127.0.0.1', port: readyPort },
    }),
    adminPort,
  );
  return {
    envoy,
    listenPort,
    origin: `${options.tls ? 'https' : 'http'}://127.0.0.1:${listenPort}`,
    readyUrl: `http://127.0.0.1:${readyPort}${ENVOY_READY_PATH}`,
  };
}
