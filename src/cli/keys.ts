// `token-tap keys rotate`: re-seals every grant, held grant and quarantined capture under the active
// key (operations/key-rotation.ts) and says what still holds an older key, in Postgres and in this pod's spool,
// so an operator knows when that key may leave the ring. Audited as the other vault commands are.
import type { Command } from 'commander';
import { rotateKeys, type RotationResult } from '../operations/key-rotation.js';
import { VaultError } from '../store/errors.js';
import { audited, positive, printJson } from './vault.js';
import { SPOOL_KEY_REPORT_HELP, withSpoolKeyReport } from './spool-key-report.js';

function describeRows(counts: { grants: number; pendingGrants: number; quarantinedCaptures: number }): string {
  return `${counts.grants} grants, ${counts.pendingGrants} held grants, ${counts.quarantinedCaptures} quarantined captures`;
}

function missingKeysRefusal(result: RotationResult): VaultError | undefined {
  if (result.missing.length === 0) return undefined;
  const names = result.missing.map((missing) => `"${missing.keyId}" (${describeRows(missing)})`).join(', ');
  return new VaultError(
    `rows are sealed under key id ${names}, which TOKEN_TAP_KEYS lacks, so they cannot be re-encrypted: add the key back after the active one and run again, or delete those rows`,
    'failed_precondition',
  );
}

export function registerKeyCommands(program: Command): void {
  const keys =
    program.commands.find((command) => command.name() === 'keys') ?? program.command('keys').description('The encryption key ring (TOKEN_TAP_KEYS).');
  keys
    .command('rotate')
    .description(
      'Re-encrypt every grant, held grant and quarantined capture under the active key (the first in TOKEN_TAP_KEYS),\n' +
        'a batch per transaction. Stopped part way, it resumes where it left off when run again. Reads DATABASE_URL,\n' +
        'TOKEN_TAP_KEYS and TOKEN_TAP_SEAL_FORMAT (the format values are sealed in; docs/upgrading.md, "Seal format 3").\n' +
        SPOOL_KEY_REPORT_HELP,
    )
    .option('--batch-size <n>', 'rows per transaction (1-10000)', '200')
    .action(async (options: { batchSize: string }) => {
      const batchSize = positive(options.batchSize, '--batch-size', 10_000);
      const rotation = await audited('RotateKeys', { keys: true }, {}, async ({ pool, ring, store }, event) => {
        const result = await rotateKeys(pool, ring, store, {
          batchSize,
          onProgress: ({ table, done, total }) => process.stderr.write(`token-tap: ${table}: ${done}/${total} re-encrypted under key "${ring.activeKeyId}"\n`),
        });
        event.detail = `re-encrypted ${describeRows(result)} under key ${ring.activeKeyId}`;
        const output = await withSpoolKeyReport(process.env, ring.activeKeyId, {
          active_key_id: ring.activeKeyId,
          grants: result.grants,
          pending_grants: result.pendingGrants,
          quarantined_captures: result.quarantinedCaptures,
          missing_keys: result.missing.map((missing) => ({
            key_id: missing.keyId,
            grants: missing.grants,
            pending_grants: missing.pendingGrants,
            quarantined_captures: missing.quarantinedCaptures,
          })),
        });
        const refusal = missingKeysRefusal(result);
        if (refusal) {
          event.outcome = refusal.outcome;
          event.detail = `${event.detail}; ${refusal.message}`;
        }
        return { output, refusal };
      });
      printJson(rotation.output);
      if (rotation.refusal) throw rotation.refusal;
    });
}
