// The configuration of the spool, the ops listener, the graceful stop and the commit durability.
import path from 'node:path';
import { expect } from 'chai';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';

describe('config: spool, ops listener, shutdown grace', () => {
  const valid = { DATABASE_URL: 'postgres://u:pw@127.0.0.1:5432/db', TOKEN_TAP_KEYS: generateKeySpec('k1') };

  it('defaults: spool in ./.token-tap/spool of the working directory, 128 MiB, fsync every 5 ms, segments in Postgres kept 60 s, ops on 127.0.0.1:9464, 10 s grace', () => {
    const config = loadSidecarConfig(valid);
    expect(config.spoolDir).to.equal(path.resolve('.token-tap/spool'));
    expect(config).to.include({ spoolMaxBytes: 128 * 1024 * 1024, spoolFsyncMs: 5, spoolGraceMs: 60_000, shutdownGraceMs: 10_000 });
    expect(config.opsListen).to.deep.equal({ host: '127.0.0.1', port: 9464 });
  });

  it('reads every setting from the environment; an fsync interval of 0 means at once', () => {
    const config = loadSidecarConfig({
      ...valid,
      TOKEN_TAP_SPOOL_DIR: '/var/spool/token-tap',
      TOKEN_TAP_SPOOL_MAX_BYTES: '1048576',
      TOKEN_TAP_SPOOL_FSYNC_MS: '0',
      TOKEN_TAP_SPOOL_GRACE_SECONDS: '0',
      TOKEN_TAP_OPS_LISTEN: '0.0.0.0:9000',
      TOKEN_TAP_SHUTDOWN_GRACE_MS: '25000',
    });
    expect(config).to.include({ spoolDir: '/var/spool/token-tap', spoolMaxBytes: 1048576, spoolFsyncMs: 0, spoolGraceMs: 0, shutdownGraceMs: 25_000 });
    expect(config.opsListen).to.deep.equal({ host: '0.0.0.0', port: 9000 });
  });

  it('commits durably by default (synchronous_commit on), remote_write or remote_apply for synchronous standbys, and refuses anything weaker', () => {
    expect(loadSidecarConfig(valid).commitDurability).to.equal('on');
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_COMMIT_DURABILITY: 'remote_apply' }).commitDurability).to.equal('remote_apply');
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_COMMIT_DURABILITY: 'Remote_Write' }).commitDurability).to.equal('remote_write');
    for (const weaker of ['off', 'local', 'yes']) {
      try {
        loadSidecarConfig({ ...valid, TOKEN_TAP_COMMIT_DURABILITY: weaker });
        expect.fail(`${weaker} should have been refused`);
      } catch (error) {
        expect(error).to.be.instanceOf(ConfigError);
        expect((error as ConfigError).problems.join('\n')).to.match(/TOKEN_TAP_COMMIT_DURABILITY must be one of on, remote_write, remote_apply/);
      }
    }
  });

  it('reports every bad setting at once', () => {
    try {
      loadSidecarConfig({
        ...valid,
        TOKEN_TAP_SPOOL_MAX_BYTES: '1000',
        TOKEN_TAP_SPOOL_FSYNC_MS: 'soon',
        TOKEN_TAP_OPS_LISTEN: 'everywhere',
        TOKEN_TAP_SHUTDOWN_GRACE_MS: '-1',
        TOKEN_TAP_SPOOL_GRACE_SECONDS: '90000',
      });
      expect.fail('should have thrown');
    } catch (error) {
      expect(error).to.be.instanceOf(ConfigError);
      const { problems } = error as ConfigError;
      expect(problems).to.have.length(5);
      expect(problems.join('\n')).to.match(/TOKEN_TAP_SPOOL_MAX_BYTES must be at least 65536/);
      expect(problems.join('\n')).to.match(/TOKEN_TAP_SPOOL_FSYNC_MS must be an integer of 0 or more/);
      expect(problems.join('\n')).to.match(/TOKEN_TAP_OPS_LISTEN must be HOST:PORT/);
      expect(problems.join('\n')).to.match(/TOKEN_TAP_SHUTDOWN_GRACE_MS/);
      expect(problems.join('\n')).to.match(/TOKEN_TAP_SPOOL_GRACE_SECONDS must be at most 86400/);
    }
  });
});
