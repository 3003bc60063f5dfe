// Static checks of what we ship for Docker: compose parses, and versions agree across files.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8');

describe('packaging', () => {
  const envoyVersion = /^ENVOY_VERSION="([\d.]+)"/m.exec(read('scripts/setup'))?.[1];

  it('scripts/setup pins an Envoy 1.40.x wheel', () => {
    expect(envoyVersion).to.match(/^1\.40\.\d+$/);
  });

  it('docker-compose.yml parses, runs the same Envoy version as the venv, and mounts a shipped Envoy config', () => {
    const compose = parse(read('docker-compose.yml')) as { services: Record<string, { image?: string; volumes?: string[]; network_mode?: string }> };
    expect(compose.services.envoy!.image).to.equal(`envoyproxy/envoy:v${envoyVersion}`);
    expect(compose.services.envoy!.network_mode).to.equal('service:token-tap');
    const mounted = compose.services.envoy!.volumes!.map((volume) => volume.split(':')[0]!.replace(/^\.\//, ''));
    for (const file of mounted) expect(existsSync(`${root}${file}`), file).to.equal(true);
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.image) expect(service.image, name).to.match(/:[\w.-]*\d[\w.-]*$/, 'images are pinned to a version');
    }
  });
});
