// The declared settings (src/config/settings.ts) are the one place a default is written: the loaders read
// through them, and docs/configuration.md's table must agree with them on every name and default.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { documentedDefault, renderSettingsTable, SETTINGS } from '../../src/config/settings.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';

const CONFIGURATION_DOC = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));
const FAILURE_BEHAVIOUR_DOC = fileURLToPath(new URL('../../../docs/failure-behaviour.md', import.meta.url));
const valid = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

/** The default cell of the docs table row of `name`, or undefined when it has no row of its own. */
function documentedRow(doc: string, name: string): string | undefined {
  const row = doc.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
  return row?.split(' | ')[1];
}

describe('declared settings', () => {
  it('each variable is declared once', () => {
    const names = SETTINGS.map((setting) => setting.name);
    expect(new Set(names).size).to.equal(names.length);
  });

  it('docs/configuration.md has a row for each declared variable, with its declared default', () => {
    const doc = readFileSync(CONFIGURATION_DOC, 'utf8');
    const disagreeing = SETTINGS.filter((setting) => documentedRow(doc, setting.name) !== documentedDefault(setting)).map(
      (setting) => `${setting.name}: declared ${documentedDefault(setting)}, documented ${documentedRow(doc, setting.name) ?? '(no row)'}`,
    );
    expect(disagreeing, `docs/configuration.md disagrees with src/config/settings.ts; the declared rows are:\n${renderSettingsTable()}`).to.deep.equal([]);
  });

  it("docs/failure-behaviour.md's settings table, where it names declared variables, gives their declared defaults", () => {
    const byName = new Map(SETTINGS.map((setting) => [setting.name, setting]));
    const unquoted = (text: string) => text.replaceAll('`', '').trim();
    const rows = readFileSync(FAILURE_BEHAVIOUR_DOC, 'utf8').split('\n').filter((line) => line.startsWith('| `TOKEN_TAP_'));
    const checked: string[] = [];
    const disagreeing: string[] = [];
    for (const row of rows) {
      const [names, defaults] = row.split(' | ');
      const declared = names!.slice(2).split(', ').map((name) => byName.get(unquoted(name)));
      if (declared.some((setting) => setting === undefined)) continue;
      const expected = declared.map((setting) => unquoted(documentedDefault(setting!))).join(', ');
      if (unquoted(defaults!) !== expected) disagreeing.push(`${names}: declared ${expected}, documented ${defaults}`);
      checked.push(...declared.map((setting) => setting!.name));
    }
    expect(disagreeing).to.deep.equal([]);
    expect(checked).to.include.members(['TOKEN_TAP_SPOOL_DIR', 'TOKEN_TAP_PG_QUERY_TIMEOUT_MS', 'TOKEN_TAP_API_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 'TOKEN_TAP_REFUSAL_SUMMARY_MS']);
  });

  it('the loader gives every declared default when nothing is set', () => {
    const config = loadSidecarConfig(valid);
    expect(config.maxBodyBytes).to.equal(SETTINGS.find((setting) => setting.name === 'TOKEN_TAP_MAX_BODY_BYTES')!.default);
    expect(config.spoolGraceMs).to.equal(60 * 1000);
    expect(config.vault.refreshApplyWindowMs).to.equal(SETTINGS.find((setting) => setting.name === 'TOKEN_TAP_REFRESH_APPLY_WINDOW_MS')!.default);
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
