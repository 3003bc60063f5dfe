// Writes docs/configuration.md's table of environment variables from src/config/settings.ts
// (`npm run docs:config`); test/unit/settings.test.ts fails when the file is not what this writes.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { withRenderedTable } from '../src/config/settings-docs.js';

const CONFIGURATION_DOC = fileURLToPath(new URL('../../docs/configuration.md', import.meta.url));
const before = readFileSync(CONFIGURATION_DOC, 'utf8');
const after = withRenderedTable(before);
if (after !== before) writeFileSync(CONFIGURATION_DOC, after);
console.log(after === before ? 'docs/configuration.md is up to date' : 'docs/configuration.md: settings table rewritten');
