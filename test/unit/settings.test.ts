// The declared settings (src/config/settings.ts) are the one place a variable, its default and its doc are
// written: the loaders read through them, and docs/configuration.md's table is rendered from them.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { MAX_BODY_BYTES, REFRESH_APPLY_WINDOW_MS, SETTINGS, settingNames } from '../../src/config/settings.js';
import { documentedDefault, RENDER_COMMAND, renderSettingsTable, TABLE_END, TABLE_START, withRenderedTable } from '../../src/config/settings-docs.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';

const CONFIGURATION_DOC = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));
const SOURCE = fileURLToPath(new URL('../../../src/', import.meta.url));
const FAILURE_BEHAVIOUR_DOC = fileURLToPath(new URL('../../../docs/failure-behaviour.md', import.meta.url));
const valid = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

describe('declared settings', () => {
  it('each variable is declared once', () => {
    const names = SETTINGS.flatMap(settingNames);
    expect(new Set(names).size).to.equal(names.length);
  });

  it('docs/configuration.md holds exactly the table rendered from the declarations', () => {
    const doc = readFileSync(CONFIGURATION_DOC, 'utf8');
    expect(doc).to.contain(TABLE_START).and.contain(TABLE_END);
    const rendered = withRenderedTable(doc);
    const stale = doc.split('\n').filter((line) => line.startsWith('| `') && !rendered.includes(`${line}\n`));
    expect(
      doc === rendered,
      `docs/configuration.md's settings table differs from src/config/settings.ts: run \`${RENDER_COMMAND}\`. Rows not as declared:\n${stale.join('\n')}`,
    ).to.equal(true);
  });

  it('renders a TLS group as two rows, and a test-only variable as none', () => {
    const table = renderSettingsTable();
    expect(table).to.contain('| `TOKEN_TAP_API_TLS_CERT`, `_KEY` | (none) |').and.contain('| `TOKEN_TAP_API_TLS_CLIENT_CA` | (none) |');
    expect(table).not.to.contain('TOKEN_TAP_FAULT_INJECTION');
  });

  it("a secret's row never shows a value: it has no default, and its default cell says what happens without it", () => {
    const secrets = SETTINGS.filter((setting) => setting.kind === 'secret');
    expect(secrets.map((setting) => setting.name)).to.include.members(['TOKEN_TAP_KEYS', 'TOKEN_TAP_FINGERPRINT_KEY']);
    for (const secret of secrets) {
      expect(secret).not.to.have.property('default');
      expect(documentedDefault(secret)).to.match(/^\([^`]+\)$/);
    }
  });

  it('the loaders, the CLI and the sidecar read no variable by a literal name: each goes through its declaration', () => {
    const files = ['config', 'cli'].flatMap((folder) => readdirSync(path.join(SOURCE, folder)).map((name) => path.join(SOURCE, folder, name)));
    // NODE_ENV is Node's; DEMO_IDP_CLIENT_SECRET belongs to the demo IdP command alone.
    const literal =
      /\benv(?:\.(?!NODE_ENV\b|DEMO_IDP_CLIENT_SECRET\b)[A-Z][A-Z0-9_]*|\[\s*['"`])|\b(?:positiveInteger|nonNegativeInteger|readBoolean)\(\s*env\s*,\s*['"`]/;
    const found = [...files, path.join(SOURCE, 'sidecar.ts')]
      .filter((file) => file.endsWith('.ts'))
      .flatMap((file) =>
        readFileSync(file, 'utf8')
          .split('\n')
          .map((line, index) => `${path.relative(SOURCE, file)}:${index + 1}: ${line.trim()}`)
          .filter((line) => literal.test(line)),
      );
    expect(found).to.deep.equal([]);
  });

  it("docs/failure-behaviour.md's settings table, where it names declared variables, gives their declared defaults", () => {
    const byName = new Map(SETTINGS.flatMap((setting) => settingNames(setting).map((name) => [name, setting] as const)));
    const unquoted = (text: string) => text.replaceAll('`', '').trim();
    const rows = readFileSync(FAILURE_BEHAVIOUR_DOC, 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('| `TOKEN_TAP_'));
    const checked: string[] = [];
    const disagreeing: string[] = [];
    for (const row of rows) {
      const [names, defaults] = row.split(' | ');
      const declared = names!
        .slice(2)
        .split(', ')
        .map((name) => byName.get(unquoted(name)));
      if (declared.some((setting) => setting === undefined)) continue;
      const expected = declared.map((setting) => unquoted(documentedDefault(setting!))).join(', ');
      if (unquoted(defaults!) !== expected) disagreeing.push(`${names}: declared ${expected}, documented ${defaults}`);
      checked.push(...declared.map((setting) => setting!.name));
    }
    expect(disagreeing).to.deep.equal([]);
    expect(checked).to.include.members([
      'TOKEN_TAP_SPOOL_DIR',
      'TOKEN_TAP_PG_QUERY_TIMEOUT_MS',
      'TOKEN_TAP_API_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS',
      'TOKEN_TAP_REFUSAL_SUMMARY_MS',
    ]);
  });

  it('the loader gives every declared default when nothing is set', () => {
    const config = loadSidecarConfig(valid);
    expect(config.maxBodyBytes).to.equal(MAX_BODY_BYTES.default);
    expect(config.spoolGraceMs).to.equal(60 * 1000);
    expect(config.vault.refreshApplyWindowMs).to.equal(REFRESH_APPLY_WINDOW_MS.default);
    expect(config.extProcThread).to.equal(false);
  });

  it('reports a declared bound with its own message, and every bad setting at once', () => {
    try {
      loadSidecarConfig({ ...valid, TOKEN_TAP_CAPTURE_NICE: '20', TOKEN_TAP_CAPTURE_BACKLOG: '-1', TOKEN_TAP_EXTPROC_THREAD: 'maybe' });
      expect.fail('should have thrown');
    } catch (error) {
      expect(error).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).problems).to.deep.equal([
        'TOKEN_TAP_CAPTURE_NICE must be between 0 and 19, got 20',
        'TOKEN_TAP_CAPTURE_BACKLOG must be a positive integer, got "-1"',
        'TOKEN_TAP_EXTPROC_THREAD must be true or false, got "maybe"',
      ]);
    }
  });
});
