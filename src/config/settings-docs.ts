// docs/configuration.md's table of environment variables, rendered from the declarations
// (config/settings.ts): scripts/render-config-docs.ts writes it between the markers, and
// test/unit/settings.test.ts fails when the file holds anything else. A secret's row shows what
// happens without it, never a value.
import { SETTINGS, type Setting } from './settings.js';

export const TABLE_START = '<!-- settings table: rendered from src/config/settings.ts by `npm run docs:config`; edit there, not here -->';
export const TABLE_END = '<!-- end of settings table -->';
export const RENDER_COMMAND = 'npm run docs:config';

/** The default as docs/configuration.md's table shows it. */
export function documentedDefault(setting: Setting): string {
  if (setting.kind === 'secret') return setting.defaultDoc;
  if ('default' in setting) return setting.defaultDoc ?? `\`${String(setting.default)}\``;
  return setting.defaultDoc ?? '(none)';
}

/** The table rows of one setting: none for a test-only one, two for a TLS group (certificate and key, client CA). */
function rows(setting: Setting): string[] {
  switch (setting.kind) {
    case 'test-only':
      return [];
    case 'tls-files':
      return [
        `| \`${setting.cert}\`, \`${setting.key.slice(setting.key.lastIndexOf('_'))}\` | ${setting.defaultDoc} | ${setting.doc} |`,
        `| \`${setting.clientCa}\` | ${setting.defaultDoc} | ${setting.clientCaDoc} |`,
      ];
    default:
      return [`| \`${setting.name}\` | ${documentedDefault(setting)} | ${setting.doc} |`];
  }
}

/** The declared settings as a Markdown table (variable, default, meaning). */
export function renderSettingsTable(settings: readonly Setting[] = SETTINGS): string {
  return ['| variable | default | meaning |', '|---|---|---|', ...settings.flatMap(rows)].join('\n');
}

/** `doc` with the text between the markers replaced by the rendered table; throws when a marker is missing. */
export function withRenderedTable(doc: string, table = renderSettingsTable()): string {
  const start = doc.indexOf(TABLE_START);
  const end = doc.indexOf(TABLE_END);
  if (start < 0 || end < start) throw new Error(`docs/configuration.md must hold the markers ${TABLE_START} and ${TABLE_END}`);
  return `${doc.slice(0, start + TABLE_START.length)}\n${table}\n${doc.slice(end)}`;
}
