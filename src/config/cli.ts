// Settings of the vault commands (token-tap grants, refresh, revoke, erase, keys, captures, api-keys):
// what each command needs of the sidecar's environment, read here once per command, every missing
// piece reported at once. The CLI builds its pool and key ring from these (cli/vault.ts).
import type { IdpClients } from '../idp/client.js';
import { KeyRingError, parseKeyRing, type KeyRing } from '../keys/key-ring.js';
import type { CommitDurability } from '../store/pool-settings.js';
import { loadIdpClients } from './idp-file.js';
import { readCommitDurability } from './postgres.js';
import { DATABASE_URL, FINGERPRINT_KEY, KEYS, readSet, SEAL_FORMAT } from './settings.js';
import { ConfigError } from './values.js';

export interface CliNeeds {
  /** The key ring (TOKEN_TAP_KEYS): commands that open or seal tokens. */
  keys?: boolean;
  /** The IdP clients (TOKEN_TAP_IDP_CONFIG): commands that call an IdP. */
  idps?: boolean;
}

export interface CliConfig {
  databaseUrl: string;
  /** Undefined unless the command needs it. */
  keyRing: KeyRing | undefined;
  /** Empty unless the command needs them. */
  idpClients: IdpClients;
  commitDurability: CommitDurability;
}

export function loadCliConfig(env: NodeJS.ProcessEnv, needs: CliNeeds): CliConfig {
  const problems: string[] = [];
  const databaseUrl = readSet(env, DATABASE_URL) ?? '';
  if (!databaseUrl) problems.push('DATABASE_URL is not set: set it to the Postgres connection string the sidecar uses');
  let keyRing: KeyRing | undefined;
  if (needs.keys) {
    try {
      keyRing = parseKeyRing(readSet(env, KEYS) ?? '', env[FINGERPRINT_KEY.name], env[SEAL_FORMAT.name]);
    } catch (error) {
      if (!(error instanceof KeyRingError)) throw error;
      problems.push(readSet(env, KEYS) ? error.message : 'TOKEN_TAP_KEYS is not set: set it to the key ring the sidecar uses');
    }
  }
  const idpClients: IdpClients = needs.idps ? loadIdpClients(env, problems) : new Map();
  const commitDurability = readCommitDurability(env, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return { databaseUrl, keyRing, idpClients, commitDurability };
}
