// The TokenVault gRPC service. Each call: authenticate, authorize for its IdP and operation, do
// the work, decide the answer, write one access_events row with that outcome, answer. The audit
// row is written before an answer the work decided leaves; when it cannot be written the answer is
// withheld (UNAVAILABLE), so nothing is served unrecorded. Errors become gRPC statuses by
// grpcStatusOf and refusalOf (errors.ts) and nowhere else.
import type * as grpc from '@grpc/grpc-js';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ALL, type Operation } from './api-keys.js';
import type { AccessEvent, AccessEventLog, AccessOutcome } from '../store/access-events.js';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import type { KeyRing } from '../keys/key-ring.js';
import { describeError } from '../lib/error-description.js';
import { grpcStatusOf, refusalOf } from './errors.js';
import { eraseUser } from '../operations/erase.js';
import { getGrant } from '../operations/get.js';
import { VaultError } from '../store/errors.js';
import { listGrants, subjectsByEmail, type GrantPosition } from '../store/grant-listing.js';
import type { GrantRefresher } from '../operations/refresh.js';
import type { GrantRevoker } from '../operations/revoke.js';
import type { GrantStore, OpenableGrantRow } from '../store/grants.js';
import { AccessDenied, authorize, mayDo, type Authenticator, type Caller } from './auth.js';
import type { ApiMetrics } from './metrics.js';
import type {
  DeleteSubjectRequest__Output,
  DeleteSubjectResponse,
  GetGrantRequest__Output,
  GetGrantResponse,
  ListGrantsRequest__Output,
  ListGrantsResponse,
  RefreshGrantRequest__Output,
  RefreshGrantResponse,
  RevokeGrantRequest__Output,
  RevokeGrantResponse,
  UserSelector,
} from './protocol.js';
import { grantMessage, summaryMessage, summaryOfGrant } from './wire.js';

export interface TokenVaultServiceOptions {
  pool: pg.Pool;
  store: GrantStore;
  /** The key ring: an erasure finds the user's quarantined captures by its fingerprint key. */
  keyRing: KeyRing;
  refresher: GrantRefresher;
  revoker: GrantRevoker;
  authenticator: Authenticator;
  events: AccessEventLog;
  /** GetGrant refreshes first when the access token expires within this many seconds (keys with refresh). */
  autoRefreshSeconds: number;
  logger: Logger;
  metrics: ApiMetrics;
}

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;
const MAX_NAME_LENGTH = 1024;
/** Longest value of each string field; others get MAX_NAME_LENGTH. An IdP name is bounded by its pattern. */
const MAX_FIELD_LENGTH: Record<string, number> = { subject: MAX_NAME_LENGTH, email: 320, page_token: 4096 };
// C0, DEL and C1: no IdP name, subject or email has one, and Postgres refuses NUL in text.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Every string field of a request, before any Postgres work (the key check included): a bad one is
 * INVALID_ARGUMENT for this call alone. Messages name the field, never quote the value.
 */
function checkRequestStrings(request: unknown): void {
  if (typeof request !== 'object' || request === null) return;
  for (const [field, value] of Object.entries(request)) {
    if (typeof value !== 'string' || value === '') continue;
    const max = MAX_FIELD_LENGTH[field] ?? MAX_NAME_LENGTH;
    if (value.length > max) throw new VaultError(`${field} is longer than ${max} characters`, 'invalid_argument');
    if (CONTROL_CHARACTER.test(value)) throw new VaultError(`${field} contains a control character (such as NUL or a line break)`, 'invalid_argument');
    if (field === 'idp' && !isIdpName(value)) throw new VaultError(`idp is not an IdP name (${IDP_NAME_RULE})`, 'invalid_argument');
  }
}

/** What the audit row says about the grant a call touched. */
interface AuditNotes {
  idp?: string;
  subject?: string;
  detail?: string;
}

/** A call's answer, decided once: what the caller gets, and what its audit row says. */
interface Verdict<Res> {
  outcome: AccessOutcome;
  detail?: string | undefined;
  failure?: { code: grpc.status; details: string };
  value?: Res;
  /** Decided by the caller giving up, not by the work. */
  gaveUp?: boolean;
}

const GAVE_UP = 'the caller gave up (its deadline passed, or it cancelled) before the answer';

/** Calls whose work changes something (a deletion, a rotation, a revocation) even when no one waits for the answer. */
const CHANGES_SOMETHING = new Set(['RefreshGrant', 'RevokeGrant', 'DeleteSubject']);

/**
 * The audit row of a call the caller gave up on before its work ended. A call that changes
 * something records what its work did (its outcome and detail: the deletion, rotation or revocation
 * happened all the same) and that the caller gave up; a read stays `cancelled` (nothing was served)
 * and keeps what its work said, if anything.
 */
function afterGivingUp(operation: string, own: { outcome: AccessOutcome; detail?: string | undefined }): { outcome: AccessOutcome; detail: string } {
  if (CHANGES_SOMETHING.has(operation)) return { outcome: own.outcome, detail: [own.detail, GAVE_UP].filter(Boolean).join('; ') };
  return { outcome: 'cancelled', detail: `${GAVE_UP} (the work went on: ${[own.outcome, own.detail].filter(Boolean).join(', ')})` };
}

function required(value: string | undefined, field: string): string {
  if (!value) throw new VaultError(`${field} is required`, 'invalid_argument');
  if (value.length > MAX_NAME_LENGTH) throw new VaultError(`${field} is longer than ${MAX_NAME_LENGTH} characters`, 'invalid_argument');
  return value;
}

function tlsClientOf(call: grpc.ServerUnaryCall<unknown, unknown>): string | undefined {
  const certificate = call.getAuthContext?.()?.sslPeerCertificate;
  const subject = certificate?.subject as Record<string, string | string[]> | undefined;
  const cn = subject?.CN;
  return Array.isArray(cn) ? cn.join(',') : cn;
}

function encodePageToken(position: GrantPosition): string {
  return Buffer.from(JSON.stringify([position.idp, position.subject])).toString('base64url');
}

function decodePageToken(token: string): GrantPosition | undefined {
  if (!token) return undefined;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (
      Array.isArray(parsed) &&
      parsed.length === 2 &&
      parsed.every((part) => typeof part === 'string' && !CONTROL_CHARACTER.test(part) && part.length <= MAX_NAME_LENGTH)
    ) {
      return { idp: parsed[0] as string, subject: parsed[1] as string };
    }
  } catch {
    // fall through
  }
  throw new VaultError('page_token is not one this server handed out; start again with an empty page_token', 'invalid_argument');
}

/**
 * Every call that talks only to Postgres is decided within this, UNAVAILABLE past it: with Postgres
 * blackholed (a partition, a failover behind a load balancer) a caller must not hang on two
 * queued queries. An answer decided in time still waits for its audit row. Calls that wait on an
 * IdP are bounded by its timeout_ms instead.
 */
const CALL_DEADLINE_MS = 4_500;
const CALLS_TO_AN_IDP = new Set(['RefreshGrant', 'RevokeGrant', 'DeleteSubject']);

/** Answering takes a moment after a wait ends (the audit row): a wait stops this long before the deadline. */
const DEADLINE_MARGIN_MS = 500;

/** Epoch ms until which a call may wait on another sidecar's refresh: its gRPC deadline, if it set one. */
function waitUntil(call: grpc.ServerUnaryCall<unknown, unknown>): number | undefined {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at - DEADLINE_MARGIN_MS : undefined;
}

export function createTokenVaultHandlers(options: TokenVaultServiceOptions): grpc.UntypedServiceImplementation {
  const { pool, store, keyRing, refresher, revoker, authenticator, events, logger, metrics } = options;

  /**
   * `prefetch` names the grant a request is about when it can be read with the key check, in
   * one query (GetGrant by subject, the hot path); `run` then gets the row, still sealed.
   */
  function unary<Req, Res>(
    operation: string,
    run: (request: Req, caller: Caller, notes: AuditNotes, prefetched: OpenableGrantRow | undefined, waitUntil: number | undefined) => Promise<Res>,
    prefetch?: (request: Req) => { idp: string; subject: string } | undefined,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const started = process.hrtime.bigint();
      const notes: AuditNotes = {};
      const event: AccessEvent = { operation, outcome: 'internal', peer: call.getPeer(), tlsClient: tlsClientOf(call) };
      // Whichever comes first decides the answer: the work ending, the deadline, or the caller giving
      // up. The audit row carries that decision, so it says what the caller got. An answer that tells
      // something (data, or a refusal) leaves once its row is committed; an UNAVAILABLE (the work's,
      // or the deadline's) tells nothing and leaves at once, its row following. Past the deadline,
      // what the work read is dropped, never sent late. The row is written once the work ends, so
      // when the caller gave up first it also says what the work did (afterGivingUp).
      let verdict: Verdict<Res> | undefined;
      const decide = (decided: Verdict<Res>): boolean => {
        if (verdict) return false;
        verdict = decided;
        clearTimeout(deadline);
        call.removeListener('cancelled', onCancelled);
        return true;
      };
      const onCancelled = () => {
        decide({ outcome: 'cancelled', detail: GAVE_UP, failure: { code: grpcStatusOf('cancelled'), details: 'cancelled' }, gaveUp: true });
      };
      call.on('cancelled', onCancelled);
      // GetGrant may refresh first (TOKEN_TAP_API_AUTO_REFRESH_SECONDS, or asked per call): then it waits on the IdP too.
      const mayRefresh =
        operation === 'GetGrant' &&
        (options.autoRefreshSeconds > 0 || Boolean((call.request as { refresh_if_expires_within_seconds?: number }).refresh_if_expires_within_seconds));
      const deadline =
        CALLS_TO_AN_IDP.has(operation) || mayRefresh
          ? undefined
          : setTimeout(() => {
              const failure = { code: grpcStatusOf('unavailable'), details: `no answer from Postgres within ${CALL_DEADLINE_MS} ms; try again` };
              if (decide({ outcome: 'unavailable', detail: `answered UNAVAILABLE at the ${CALL_DEADLINE_MS} ms deadline`, failure })) callback(failure, null);
            }, CALL_DEADLINE_MS);
      void (async () => {
        let own: Verdict<Res>;
        try {
          checkRequestStrings(call.request);
          const { caller, grant } = await authenticator.authenticate(call.metadata, prefetch?.(call.request));
          event.apiKeyId = caller.apiKeyId;
          event.caller = caller.name;
          own = { outcome: 'ok', value: await run(call.request, caller, notes, grant, waitUntil(call)) };
        } catch (error) {
          const refusal = refusalOf(error);
          if (refusal.unexpected) logger.error({ operation, err: describeError(error) }, 'TokenVault call failed');
          if (error instanceof AccessDenied && error.presentedKeyId) event.apiKeyId ??= error.presentedKeyId;
          own = { outcome: refusal.outcome, detail: refusal.detail, failure: { code: grpcStatusOf(refusal.outcome), details: refusal.message } };
        }
        // The work ended first: it answers (below, or here at once for an UNAVAILABLE).
        const answering = decide(own);
        const decided = verdict!;
        event.idp = notes.idp;
        event.subject = notes.subject;
        const ownDetail = own.outcome === 'ok' ? notes.detail : own.detail;
        const recorded = decided.gaveUp
          ? afterGivingUp(operation, { outcome: own.outcome, detail: ownDetail })
          : { outcome: decided.outcome, detail: decided.outcome === 'ok' ? notes.detail : decided.detail };
        event.outcome = recorded.outcome;
        event.detail = recorded.detail;
        let answered = !answering;
        if (answering && decided.outcome === 'unavailable') {
          callback(decided.failure!, null);
          answered = true;
        }
        let failure = decided.failure;
        try {
          await events.record(event);
        } catch (error) {
          logger.error({ operation, err: describeError(error) }, answered ? 'cannot write an access event' : 'cannot write an access event; answer withheld');
          if (!answered) {
            event.outcome = 'unavailable';
            failure = {
              code: grpcStatusOf('unavailable'),
              details: 'the access record could not be written to Postgres, so the answer is withheld; try again',
            };
          }
        }
        metrics.calls.inc({ operation, outcome: event.outcome });
        metrics.callSeconds.observe({ operation }, Number(process.hrtime.bigint() - started) / 1e9);
        if (answered) return;
        if (failure) callback(failure, null);
        else callback(null, decided.value ?? null);
      })();
    };
  }

  /** The subject a request names, directly or by email claim; recorded for the audit row. */
  async function subjectOf(request: UserSelector, idp: string, notes: AuditNotes): Promise<string> {
    const which = request.user ?? (request.subject ? 'subject' : request.email ? 'email' : undefined);
    if (which === 'subject') {
      notes.subject = required(request.subject, 'subject');
      return notes.subject;
    }
    if (which !== 'email') throw new VaultError('set subject or email', 'invalid_argument');
    const email = required(request.email, 'email');
    notes.detail = 'by email';
    const subjects = await subjectsByEmail(pool, idp, email);
    if (subjects.length === 0) throw new VaultError(`no grant stored for IdP "${idp}" with that email`, 'not_found');
    if (subjects.length > 1) throw new VaultError(`several users of IdP "${idp}" have that email; ask by subject`, 'failed_precondition');
    notes.subject = subjects[0]!;
    return notes.subject;
  }

  const bySubject = (request: UserSelector) =>
    request.idp && request.subject && request.user !== 'email' && request.subject.length <= MAX_NAME_LENGTH
      ? { idp: request.idp, subject: request.subject }
      : undefined;

  const GetGrant = unary<GetGrantRequest__Output, GetGrantResponse>(
    'GetGrant',
    async (request, caller, notes, prefetched, waitUntil) => {
      const idp = (notes.idp = required(request.idp, 'idp'));
      const operations: Operation[] = ['get'];
      if (request.refresh_if_expires_within_seconds > 0) operations.push('refresh');
      if (request.include_refresh_token) operations.push('read_refresh_token');
      authorize(caller, operations, idp);
      const subject = await subjectOf(request, idp, notes);
      const refreshWithinSeconds = request.refresh_if_expires_within_seconds || (mayDo(caller, 'refresh') ? options.autoRefreshSeconds : 0);
      const { grant, refreshed, refreshFailed } = await getGrant(
        { store, refresher },
        { idp, subject, prefetched, refuseRevoked: true, refreshWithinSeconds, waitUntil },
      );
      if (refreshed) notes.detail = [notes.detail, 'refreshed at the IdP first'].filter(Boolean).join('; ');
      if (refreshFailed !== undefined) notes.detail = `automatic refresh failed (${refreshFailed}); served the current access token`;
      return { grant: grantMessage(grant, { tokens: true, refreshToken: request.include_refresh_token }), refreshed };
    },
    bySubject,
  );

  const ListGrants = unary<ListGrantsRequest__Output, ListGrantsResponse>('ListGrants', async (request, caller, notes) => {
    const idp = request.idp || undefined;
    if (idp) notes.idp = required(idp, 'idp');
    authorize(caller, ['list'], idp);
    const idps = idp ? [idp] : caller.idps.includes(ALL) ? undefined : caller.idps;
    const limit = Math.min(request.page_size || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const page = await listGrants(pool, { idps, after: decodePageToken(request.page_token), limit });
    notes.detail = `${page.grants.length} grants`;
    return { grants: page.grants.map(summaryMessage), next_page_token: page.next ? encodePageToken(page.next) : '' };
  });

  const RefreshGrant = unary<RefreshGrantRequest__Output, RefreshGrantResponse>('RefreshGrant', async (request, caller, notes, _prefetched, waitUntil) => {
    const idp = (notes.idp = required(request.idp, 'idp'));
    authorize(caller, ['refresh'], idp);
    const subject = await subjectOf(request, idp, notes);
    const result = await refresher.refresh(idp, subject, { waitUntil });
    notes.detail = [notes.detail, result.refreshedByThisCall ? 'refreshed at the IdP' : 'served a refresh made after this call arrived']
      .filter(Boolean)
      .join('; ');
    return {
      grant: grantMessage(result.grant, { tokens: mayDo(caller, 'get'), refreshToken: false }),
      refreshed_by_this_call: result.refreshedByThisCall,
    };
  });

  const RevokeGrant = unary<RevokeGrantRequest__Output, RevokeGrantResponse>('RevokeGrant', async (request, caller, notes) => {
    const idp = (notes.idp = required(request.idp, 'idp'));
    authorize(caller, ['revoke'], idp);
    const subject = await subjectOf(request, idp, notes);
    const result = await revoker.revoke(idp, subject);
    notes.detail = [notes.detail, result.revokedAtIdp ? 'revoked at the IdP' : 'not revoked at the IdP (no revocation_url, or already revoked)']
      .filter(Boolean)
      .join('; ');
    return { grant: summaryMessage(summaryOfGrant(result.grant)), revoked_at_idp: result.revokedAtIdp };
  });

  const DeleteSubject = unary<DeleteSubjectRequest__Output, DeleteSubjectResponse>('DeleteSubject', async (request, caller, notes) => {
    const idp = request.idp || undefined;
    if (idp) notes.idp = required(idp, 'idp');
    authorize(caller, request.revoke_at_idp ? ['delete', 'revoke'] : ['delete'], idp ?? ALL);
    const which = request.user ?? (request.subject ? 'subject' : request.email ? 'email' : undefined);
    if (which === undefined) throw new VaultError('set subject or email', 'invalid_argument');
    const subject = which === 'subject' ? required(request.subject, 'subject') : undefined;
    const email = which === 'email' ? required(request.email, 'email') : undefined;
    notes.subject = subject;
    const result = await eraseUser(pool, {
      idps: idp ? [idp] : undefined,
      subject,
      email,
      revoker: request.revoke_at_idp ? revoker : undefined,
      ring: keyRing,
    });
    if (email && result.deleted.length === 1) notes.subject = result.deleted[0]!.subject;
    notes.detail = `deleted ${result.deleted.length} grants (${result.deleted.map((ref) => `${ref.idp}/${ref.subject}`).join(', ')}), ${result.captureEventsDeleted} capture events and ${result.quarantinedCapturesDeleted} quarantined captures`;
    return { deleted: result.deleted, capture_events_deleted: result.captureEventsDeleted };
  });

  return { GetGrant, ListGrants, RefreshGrant, RevokeGrant, DeleteSubject } as grpc.UntypedServiceImplementation;
}
