// Operator commands for the capture quarantine (quarantined_captures): captures the sidecar's writer
// set aside because they failed alone (a value Postgres refuses, a held grant its key ring cannot
// open, a verification step that threw). `quarantined` lists them, never a token; `retry` opens each
// with the key ring and writes it as the writer would, one per transaction. Both are audited
// (access_events) as the other vault commands are.
import type { Command } from 'commander';
import { ConfigError } from '../config/values.js';
import { IDP_CONFIG_ENV, loadIdpConfig } from '../config/idp-file.js';
import { VaultError } from '../store/errors.js';
import { listQuarantined, type QuarantineEntry } from '../store/quarantine.js';
import { retryQuarantinedCaptures, retryVerifier, type RetryVerify } from '../operations/captures-retry.js';
import { audited } from './vault.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function entryToJson(entry: QuarantineEntry): Record<string, unknown> {
  return {
    capture_id: entry.captureId,
    idp: entry.idp,
    observed_at: entry.observedAt?.toISOString() ?? null,
    quarantined_at: entry.quarantinedAt.toISOString(),
    stage: entry.stage,
    reason: entry.reason,
    attempts: entry.attempts,
    key_id: entry.keyId,
  };
}

/** Columns padded to their widest cell, for people; --json is for scripts. */
function table(entries: readonly QuarantineEntry[]): string {
  const header = ['CAPTURE ID', 'IDP', 'OBSERVED AT', 'QUARANTINED AT', 'ATTEMPTS', 'REASON'];
  const rows = entries.map((entry) => [
    entry.captureId,
    entry.idp,
    entry.observedAt?.toISOString() ?? '-',
    entry.quarantinedAt.toISOString(),
    String(entry.attempts),
    entry.reason,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  return [header, ...rows].map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ')).join('\n');
}

/**
 * How a retry verifies a capture quarantined before verification ran: as the sidecar would, with
 * the IdPs of TOKEN_TAP_IDP_CONFIG. Without the file it stays.
 */
function retryVerifierFromEnv(): RetryVerify {
  const problems: string[] = [];
  const config = loadIdpConfig(process.env, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return retryVerifier(process.env[IDP_CONFIG_ENV] ? config.verification : undefined, `it must be verified first: set ${IDP_CONFIG_ENV} as the sidecar has it`);
}

export function registerCaptureCommands(program: Command): void {
  const captures = program.command('captures').description('Captures the sidecar set aside (quarantined) instead of writing: list and retry them.');

  captures
    .command('quarantined')
    .description(
      'List quarantined captures, oldest first: capture id, IdP, when observed and quarantined, attempts, reason. Never a token. Reads DATABASE_URL.',
    )
    .option('--idp <name>', 'only this IdP')
    .option('--json', 'print JSON instead of a table', false)
    .action(async (options: { idp?: string; json: boolean }) => {
      const entries = await audited('ListQuarantinedCaptures', {}, { idp: options.idp }, async ({ pool }, event) => {
        const found = await listQuarantined(pool, { idp: options.idp });
        event.detail = `${found.length} quarantined captures`;
        return found;
      });
      if (options.json) process.stdout.write(`${JSON.stringify(entries.map(entryToJson), null, 2)}\n`);
      else process.stdout.write(entries.length === 0 ? 'no quarantined captures\n' : `${table(entries)}\n`);
    });

  captures
    .command('retry')
    .description(
      'Write quarantined captures again (all, or those of --idp, or the --capture-id given), one per transaction.\n' +
        'A capture written leaves the quarantine in that transaction; one that fails again stays, with attempts + 1\n' +
        'and the new reason; one of a user erased after it was observed is dropped (recorded erased, no grant), as the\n' +
        `sidecar drops it. Exits 1 when any stayed. Reads DATABASE_URL, TOKEN_TAP_KEYS (and ${IDP_CONFIG_ENV}\n` +
        'for captures whose verification failed: they are verified first).',
    )
    .option('--idp <name>', 'only this IdP')
    .option('--capture-id <id>', 'only this capture; repeat for several', collect, [])
    .action(async (options: { idp?: string; captureId: string[] }) => {
      const malformed = options.captureId.filter((id) => !UUID.test(id));
      if (malformed.length > 0)
        throw new Error(`--capture-id must be a capture id as listed by "token-tap captures quarantined", got ${malformed.map((id) => `"${id}"`).join(', ')}`);
      const verify = retryVerifierFromEnv();
      const { outcomes, stayed } = await audited('RetryQuarantinedCaptures', { keys: true }, { idp: options.idp }, async ({ pool, ring, store }, event) => {
        const outcomes = await retryQuarantinedCaptures({ pool, ring, store, verify, idp: options.idp, captureIds: options.captureId });
        const stayed = outcomes.filter((outcome) => outcome.result === 'stayed').length;
        const erased = outcomes.filter((outcome) => outcome.result === 'erased').length;
        event.detail = `retried ${outcomes.length} quarantined captures: ${outcomes.length - stayed - erased} written, ${erased} dropped (user erased), ${stayed} stayed`;
        if (stayed > 0) event.outcome = 'failed_precondition';
        return { outcomes, stayed };
      });
      for (const outcome of outcomes) {
        if (outcome.result === 'written') process.stdout.write(`written  ${outcome.captureId}\n`);
        else if (outcome.result === 'erased')
          process.stdout.write(`erased   ${outcome.captureId}  (its user was erased after it was observed: dropped, no grant)\n`);
        else if (outcome.result === 'stayed') process.stdout.write(`stayed   ${outcome.captureId}  (attempts ${outcome.attempts}) ${outcome.reason}\n`);
        else process.stdout.write(`skipped  ${outcome.captureId}  (retried by someone else meanwhile, or gone)\n`);
      }
      const written = outcomes.filter((outcome) => outcome.result === 'written').length;
      const erased = outcomes.filter((outcome) => outcome.result === 'erased').length;
      process.stdout.write(
        `retried ${outcomes.length}: ${written} written, ${erased > 0 ? `${erased} dropped (user erased), ` : ''}${stayed} stayed in quarantine\n`,
      );
      if (stayed > 0) throw new VaultError(`${stayed} captures stayed in quarantine (their reasons are above)`, 'failed_precondition');
    });
}
