// Copies the files tsc does not: the SQL migrations, next to the compiled code that reads them.
import { cpSync } from 'node:fs';

cpSync('src/vault/migrations', 'dist/src/vault/migrations', { recursive: true });
