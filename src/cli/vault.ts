// Operator commands for the vault: API keys, grants (list, refresh, revoke, delete) and retention
// (key rotation is cli/keys.ts). They work on Postgres directly (DATABASE_URL, TOKEN_TAP_KEYS,
// TOKEN_TAP_IDP_CONFIG, as the sidecar has them), and each writes an access_events row as an API call would, with the
// caller "cli:<user>".
import os from 'node:os';
import type { Command } from 'commander';
import type pg from 'pg';
import { AccessEventLog, type AccessEvent } from '../store/access-events.js';
import { ALL, ApiKeyInputError, ApiKeyRepository, OPERATIONS } from '../api/api-keys.js';
import type { KeyRing } from '../keys/key-ring.js';
import { createPool } from '../store/pool.js';
import { eraseUser } from '../operations/erase.js';
import { VaultError } from '../store/errors.js';
import { describeError, errorCode } from '../lib/error-description.js';
import { asError } from '../lib/errors.js';
import { listGrants, type GrantSummaryRecord } from '../store/grant-listing.js';
import type { IdpClients } from '../idp/client.js';
import { IDP_CONFIG_ENV } from '../config/idp-file.js';
import { DATABASE_URL, EVENT_RETENTION, GRANT_RETENTION, KEYS, PURGE_INTERVAL, readSet } from '../config/settings.js';
import { loadCliConfig, type CliNeeds } from '../config/cli.js';
import { purgeExpired, readAge, type RetentionPolicy } from '../store/purge.js';
import { GrantRefresher } from '../operations/refresh.js';
import { GrantRevoker } from '../operations/revoke.js';
import { GrantStore } from '../store/grants.js';
import { sealQuarantined } from '../ingest/quarantine.js';
import { grantToJson } from './grant-json.js';

interface Vault {
  pool: pg.Pool;
  ring: KeyRing;
  store: GrantStore;
  clients: IdpClients;
  events: AccessEventLog;
}

/** What each command needs of the sidecar's environment (config/cli.ts), and its pool. */
export function connect(needs: CliNeeds): { pool: pg.Pool; ring: KeyRing | undefined; clients: IdpClients } {
  const config = loadCliConfig(process.env, needs);
  return {
    pool: createPool({ databaseUrl: config.databaseUrl, max: 2, applicationName: 'token-tap-cli', commitDurability: config.commitDurability }),
    ring: config.keyRing,
    clients: config.idpClients,
  };
}

function operator(): string {
  try {
    return `cli:${os.userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/** Turns Postgres' "no such table" into what to do about it; any other error passes through. */
export function explainMissingSchema(error: unknown): never {
  if ((error as { code?: string }).code === '42P01') {
    throw new Error('this database has no token-tap tables yet (or an older schema): start `token-tap serve` against it first');
  }
  throw error;
}

/**
 * Runs a command against the vault, audited: one access_events row whatever the outcome, durably
 * committed before the command's output (a decrypted token, a new key) is handed back to print.
 * When the row cannot be written, the command fails and its output is withheld (design §5).
 * `work` may set `event.outcome` itself for a result that is also a refusal.
 */
export async function audited<T>(
  operation: string,
  needs: { keys?: boolean; idps?: boolean },
  target: { idp?: string | undefined; subject?: string | undefined },
  work: (vault: Vault, event: AccessEvent) => Promise<T>,
): Promise<T> {
  const { pool, ring, clients } = connect(needs);
  const store = ring ? new GrantStore(pool, ring, sealQuarantined) : undefined;
  const vault: Vault = {
    pool,
    clients,
    events: new AccessEventLog(pool),
    // Only commands that declared they need the key ring reach these.
    get ring() {
      return ring!;
    },
    get store() {
      return store!;
    },
  };
  const event: AccessEvent = { operation, outcome: 'internal', caller: operator(), idp: target.idp, subject: target.subject };
  try {
    let output: T;
    try {
      output = await work(vault, event);
      if (event.outcome === 'internal') event.outcome = 'ok';
    } catch (error) {
      event.outcome = error instanceof VaultError ? error.outcome : 'internal';
      event.detail = describeError(error).message;
      const auditError = await vault.events.record(event).then(
        () => undefined,
        (failure: unknown) => failure,
      );
      let explained = error;
      try {
        explainMissingSchema(error);
      } catch (thrown) {
        explained = thrown;
      }
      // Without the schema, the audit table is missing too: the first message says it all.
      if (auditError === undefined || errorCode(error) === '42P01') throw explained;
      throw new Error(`${asError(explained).message}\n(and its access record could not be written: ${describeAuditFailure(auditError)})`, { cause: explained });
    }
    try {
      await vault.events.record(event);
    } catch (auditError) {
      throw new Error(`the access record could not be written to Postgres, so the output is withheld: ${describeAuditFailure(auditError)}`, {
        cause: auditError,
      });
    }
    return output;
  } finally {
    await pool.end();
  }
}

/** Postgres' own words (they name the table or the privilege), never a row's values. */
function describeAuditFailure(error: unknown): string {
  const { message, code } = describeError(error);
  return `${message}${code ? ` (SQLSTATE ${code})` : ''}`;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function summaryToJson(summary: GrantSummaryRecord): Record<string, unknown> {
  return {
    idp: summary.idp,
    subject: summary.subject,
    status: summary.status,
    issuer: summary.issuer,
    client_id: summary.clientId,
    email: summary.email,
    scope: summary.scope,
    has_refresh_token: summary.hasRefreshToken,
    access_token_expires_at: summary.accessTokenExpiresAt?.toISOString() ?? null,
    refresh_token_expires_at: summary.refreshTokenExpiresAt?.toISOString() ?? null,
    captured_at: summary.capturedAt.toISOString(),
    updated_at: summary.updatedAt.toISOString(),
    version: summary.version,
    verified: summary.verified,
  };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function positive(text: string, flag: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0 || value > max) throw new Error(`${flag} must be an integer from 1 to ${max}, got "${text}"`);
  return value;
}

function subcommand(program: Command, name: string, description: string): Command {
  return program.commands.find((command) => command.name() === name) ?? program.command(name).description(description);
}

function registerApiKeyCommands(program: Command): void {
  const apiKeys = program.command('api-keys').description('Keys for the TokenVault API: each allowed a set of IdPs and operations. Reads DATABASE_URL.');

  apiKeys
    .command('create')
    .description(`Make a key and print it once (only its hash is stored). Operations: ${OPERATIONS.join(', ')}, or '${ALL}'.`)
    .requiredOption('--name <name>', 'who will use it (shown in listings and in access_events)')
    .option('--idp <name>', `an IdP the key may use; repeat for several, '${ALL}' for every IdP`, collect, [])
    .option('--operation <op>', 'an operation the key may call; repeat for several', collect, [])
    .action(async (options: { name: string; idp: string[]; operation: string[] }) => {
      const key = await audited('CreateApiKey', {}, {}, async ({ pool }, event) => {
        try {
          const key = await new ApiKeyRepository(pool).create(options.name, options.idp, options.operation);
          event.apiKeyId = key.id;
          event.detail = `key "${key.name}" for IdPs ${key.idps.join(',')} and operations ${key.operations.join(',')}`;
          return key;
        } catch (error) {
          if (error instanceof ApiKeyInputError) throw new VaultError(error.message, 'invalid_argument');
          throw error;
        }
      });
      printJson({ id: key.id, name: key.name, idps: key.idps, operations: key.operations, created_at: key.createdAt.toISOString(), api_key: key.token });
      process.stderr.write('token-tap: this is the only time the key is shown; callers send it as "authorization: Bearer <api_key>"\n');
    });

  apiKeys
    .command('list')
    .description('Every key: id, name, IdPs, operations, when made and revoked. Never a secret.')
    .action(async () => {
      const { pool } = connect({});
      try {
        const keys = await new ApiKeyRepository(pool).list().catch(explainMissingSchema);
        printJson(
          keys.map((key) => ({
            id: key.id,
            name: key.name,
            idps: key.idps,
            operations: key.operations,
            created_at: key.createdAt.toISOString(),
            revoked_at: key.revokedAt?.toISOString() ?? null,
          })),
        );
      } finally {
        await pool.end();
      }
    });

  apiKeys
    .command('revoke')
    .description('Revoke a key: every later call with it is UNAUTHENTICATED.')
    .requiredOption('--id <id>', 'the key id (api-keys list), the part after "ttk_"')
    .action(async (options: { id: string }) => {
      printJson(
        await audited('RevokeApiKey', {}, {}, async ({ pool }, event) => {
          event.apiKeyId = options.id;
          if (!(await new ApiKeyRepository(pool).revoke(options.id)))
            throw new VaultError(`no API key with id "${options.id}" (see token-tap api-keys list)`, 'not_found');
          return { id: options.id, revoked: true };
        }),
      );
    });
}

function registerGrantCommands(program: Command): void {
  const grants = subcommand(program, 'grants', 'Read and manage captured grants (operators; tokens are printed decrypted).');

  grants
    .command('list')
    .description('Grants without tokens, ordered by IdP and subject, as JSON. Reads DATABASE_URL.')
    .option('--idp <name>', 'only this IdP')
    .option('--limit <n>', 'at most this many (1-10000)', '100')
    .option('--after <idp/subject>', 'start after this grant (the "next" of the previous page)')
    .action(async (options: { idp?: string; limit: string; after?: string }) => {
      const limit = positive(options.limit, '--limit', 10_000);
      const separator = options.after?.indexOf('/') ?? -1;
      if (options.after !== undefined && separator <= 0) throw new Error('--after must be IDP/SUBJECT, as printed in "next"');
      const after = options.after ? { idp: options.after.slice(0, separator), subject: options.after.slice(separator + 1) } : undefined;
      printJson(
        await audited('ListGrants', {}, { idp: options.idp }, async ({ pool }, event) => {
          const page = await listGrants(pool, { idps: options.idp ? [options.idp] : undefined, after, limit });
          event.detail = `${page.grants.length} grants`;
          return { grants: page.grants.map(summaryToJson), next: page.next ? `${page.next.idp}/${page.next.subject}` : null };
        }),
      );
    });

  grants
    .command('refresh')
    .description(
      `Refresh a grant at its IdP with the stored refresh token and print it. If a sidecar is refreshing it now, waits (up to 30 s) for that result instead. Reads DATABASE_URL, TOKEN_TAP_KEYS and ${IDP_CONFIG_ENV}.`,
    )
    .requiredOption('--idp <name>', 'the IdP name')
    .requiredOption('--subject <sub>', "the user's subject")
    .action(async (options: { idp: string; subject: string }) => {
      printJson(
        await audited('RefreshGrant', { keys: true, idps: true }, options, async ({ pool, store, clients }, event) => {
          const result = await new GrantRefresher({ pool, store, clients }).refresh(options.idp, options.subject);
          event.detail = result.refreshedByThisCall ? 'refreshed at the IdP' : 'served a refresh made after this call arrived';
          return { refreshed_by_this_call: result.refreshedByThisCall, grant: grantToJson(result.grant) };
        }),
      );
    });

  grants
    .command('revoke')
    .description(
      `Revoke a grant at its IdP (RFC 7009, when it has a revocation_url) and mark it revoked. Reads DATABASE_URL, TOKEN_TAP_KEYS and ${IDP_CONFIG_ENV}.`,
    )
    .requiredOption('--idp <name>', 'the IdP name')
    .requiredOption('--subject <sub>', "the user's subject")
    .action(async (options: { idp: string; subject: string }) => {
      printJson(
        await audited('RevokeGrant', { keys: true, idps: true }, options, async ({ pool, store, clients }, event) => {
          const result = await new GrantRevoker({ pool, store, clients }).revoke(options.idp, options.subject);
          event.detail = result.revokedAtIdp ? 'revoked at the IdP' : 'not revoked at the IdP (no revocation_url, or already revoked)';
          return { revoked_at_idp: result.revokedAtIdp, status: result.grant.status, version: result.grant.version };
        }),
      );
    });

  grants
    .command('delete')
    .description(
      'Delete every grant of a user, with the capture events that name them and their quarantined captures (privacy\n' +
        'requests), and leave a tombstone: a capture of that user observed before now that is still on its way (a sidecar\n' +
        'spool, a held grant, the quarantine) is dropped. Tombstones are purged with the event retention. Reads DATABASE_URL\n' +
        '(and TOKEN_TAP_COMMIT_DURABILITY); TOKEN_TAP_KEYS (and TOKEN_TAP_FINGERPRINT_KEY) as the sidecar has them, needed\n' +
        'while the quarantine holds captures: without them the erasure cannot tell whose they are, and refuses.',
    )
    .option('--idp <name>', 'only this IdP')
    .option('--all-idps', 'every IdP (instead of --idp)', false)
    .option('--subject <sub>', "the user's subject")
    .option('--email <email>', 'instead: every grant whose email claim matches (case-insensitive)')
    .option('--revoke-at-idp', `revoke the tokens at the IdP first (needs ${KEYS.name} and ${IDP_CONFIG_ENV})`, false)
    .action(async (options: { idp?: string; allIdps: boolean; subject?: string; email?: string; revokeAtIdp: boolean }) => {
      const problems: string[] = [];
      if (Boolean(options.idp) === options.allIdps) problems.push('give either --idp NAME or --all-idps');
      if (Boolean(options.subject) === Boolean(options.email)) problems.push('give either --subject SUB or --email EMAIL');
      if (problems.length > 0) throw new Error(problems.join('\n'));
      const needs = { keys: options.revokeAtIdp || Boolean(readSet(process.env, KEYS)), idps: options.revokeAtIdp };
      printJson(
        await audited('DeleteSubject', needs, { idp: options.idp, subject: options.subject }, async ({ pool, store, clients, ring }, event) => {
          const revoker = options.revokeAtIdp ? new GrantRevoker({ pool, store, clients }) : undefined;
          const result = await eraseUser(pool, {
            idps: options.idp ? [options.idp] : undefined,
            subject: options.subject,
            email: options.email,
            revoker,
            ...(needs.keys ? { ring } : {}),
          });
          event.detail = `deleted ${result.deleted.length} grants, ${result.captureEventsDeleted} capture events and ${result.quarantinedCapturesDeleted} quarantined captures`;
          return {
            deleted: result.deleted,
            capture_events_deleted: result.captureEventsDeleted,
            quarantined_captures_deleted: result.quarantinedCapturesDeleted,
          };
        }),
      );
    });
}

function registerUpkeepCommands(program: Command): void {
  program
    .command('purge')
    .description(
      'Delete grants not updated for longer than an age, and capture and access events, quarantined captures and tombstones older than another.\n' +
        `Ages default to ${GRANT_RETENTION.name} and ${EVENT_RETENTION.name} (e.g. 90d, 12h). Reads ${DATABASE_URL.name}.\n` +
        `The sidecar runs the same purge itself every ${PURGE_INTERVAL.name} when that is set.`,
    )
    .option('--grants-older-than <age>', `e.g. 90d (env ${GRANT_RETENTION.name})`)
    .option('--events-older-than <age>', `e.g. 365d (env ${EVENT_RETENTION.name})`)
    .action(async (options: { grantsOlderThan?: string; eventsOlderThan?: string }) => {
      const problems: string[] = [];
      const policy: RetentionPolicy = {
        grantsOlderThanMs: readAge(options.grantsOlderThan ?? process.env[GRANT_RETENTION.name], '--grants-older-than', problems),
        eventsOlderThanMs: readAge(options.eventsOlderThan ?? process.env[EVENT_RETENTION.name], '--events-older-than', problems),
      };
      if (problems.length === 0 && policy.grantsOlderThanMs === undefined && policy.eventsOlderThanMs === undefined) {
        problems.push(`nothing to purge: give --grants-older-than and/or --events-older-than (or set ${GRANT_RETENTION.name} / ${EVENT_RETENTION.name})`);
      }
      if (problems.length > 0) throw new Error(problems.join('\n'));
      printJson(
        await audited('Purge', {}, {}, async ({ pool }, event) => {
          const result = await purgeExpired(pool, policy);
          const { grants, pendingGrants, captureEvents, accessEvents, quarantinedCaptures, tombstones } = result;
          event.detail = `purged ${grants} grants, ${pendingGrants} held grants, ${captureEvents} capture events, ${accessEvents} access events, ${quarantinedCaptures} quarantined captures, ${tombstones} tombstones`;
          return {
            grants,
            pending_grants: pendingGrants,
            capture_events: captureEvents,
            access_events: accessEvents,
            quarantined_captures: quarantinedCaptures,
            tombstones,
          };
        }),
      );
    });
}

export function registerVaultCommands(program: Command): void {
  registerApiKeyCommands(program);
  registerGrantCommands(program);
  registerUpkeepCommands(program);
}
