// The Okta token inline hook over HTTP, on its own listener behind Envoy: POST /okta/token-hook.
// Per call: authenticate (401 and nothing else when that fails), read the request, find the grant,
// answer with patch commands (or none, or an error object when the provider requires a grant).
// Each authenticated call writes an access_events row (durable commit) before it answers, a metric
// and a log line; refused calls (unauthenticated, bad_request) are counted as they come and
// summarised in rows and log lines (refusals.ts). None of them holds a claim value or a secret.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { AccessEventLog, AccessOutcome, HookOutcome } from '../store/access-events.js';
import type { HookConfig } from '../config/hook-file.js';
import { formatHostPort, type HostPort } from '../config/values.js';
import { OKTA_HOOK_PATH } from '../contract.js';
import type { GrantStore } from '../store/grants.js';
import { createHookAuthenticator } from './auth.js';
import { GrantFinder, type InFlightCaptures, type Lookup } from './lookup.js';
import { createHookMetrics } from './metrics.js';
import { HookRefusals } from './refusals.js';
import { DEFAULT_REFUSAL_SUMMARY_MS } from '../lib/refusal-summary.js';
import { addedClaimNames, buildCommands, type HookCommand } from './patch.js';
import { readTokenHookRequest, type TokenHookRequest } from './request.js';
import { describeError } from '../lib/error-description.js';
import { asError } from '../lib/errors.js';
import { listen } from '../lib/listen.js';

/** Okta sends less than 256 KB; Envoy's route limit is the same. */
export const MAX_HOOK_REQUEST_BYTES = 256 * 1024;

export interface HookServer {
  address: HostPort;
  close(): Promise<void>;
}

export interface HookServerOptions {
  listen: HostPort;
  config: HookConfig;
  /** Grants read on the hook's own connections (sidecar.ts), so its reads never queue behind the capture writer's batches. */
  store: GrantStore;
  /** Each authenticated call's access_events row, durably committed before it answers. */
  audit: AccessEventLog;
  /** The summary rows of refused calls (relaxed commit: a refusal reads nothing). */
  refusalAudit: AccessEventLog;
  captures: InFlightCaptures;
  logger: Logger;
  registry: Registry;
  /** Refused calls get a row and a log line of their own once per (peer, outcome) and this interval (TOKEN_TAP_REFUSAL_SUMMARY_MS). */
  refusalSummaryMs?: number;
  /** Peers the refusal summary tracks at most (default 1,000). */
  refusalMaxPeers?: number;
}

/** Outcomes anyone who reaches the hook can cause: summarised, never a durable row each. */
const REFUSED_OUTCOMES: ReadonlySet<string> = new Set(['unauthenticated', 'bad_request']);

type Answer = 'commands' | 'none' | 'error' | 'refused';

interface CallResult {
  status: number;
  body: unknown;
  outcome: AccessOutcome | HookOutcome;
  answer: Answer;
  idp?: string;
  subject?: string;
  detail?: string;
  claims?: string[];
  waitedMs?: number;
}

function readBody(request: http.IncomingMessage, limit: number): Promise<Buffer | 'too_large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Read on and drop the rest, so the 413 reaches the caller on a connection still usable.
        request.removeAllListeners('data');
        request.resume();
        resolve('too_large');
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

function answerFor(lookup: Exclude<Lookup, { outcome: 'found' }>, hookRequest: TokenHookRequest): CallResult {
  const oktaIdpId = hookRequest.oktaIdpId;
  const provider = 'provider' in lookup ? lookup.provider : undefined;
  const subject = 'grant' in lookup ? lookup.grant.subject : 'subject' in lookup ? lookup.subject : undefined;
  const why = {
    no_provider: `no provider for Okta IdP ${oktaIdpId ?? '(none in the request)'}`,
    no_user: 'the request names no user to match',
    no_grant: 'no captured grant matches the user',
    ambiguous: 'grants of several upstream subjects carry the email; none is used (match on claim:<name> to tell them apart)',
    unverified: 'the matched grant is not verified (allow_unverified is off)',
    email_unverified: "the matched grant's id_token does not say email_verified: true for that email",
  }[lookup.outcome];
  const base = {
    status: 200,
    outcome: lookup.outcome,
    ...(provider ? { idp: provider.idp } : {}),
    ...(subject ? { subject } : {}),
    ...('waitedMs' in lookup ? { waitedMs: lookup.waitedMs } : {}),
  };
  if (provider?.requireGrant && lookup.outcome !== 'no_provider') {
    // Okta then fails the token request: the user gets no token without the upstream claims.
    return {
      ...base,
      answer: 'error',
      detail: `${why}; error returned (require_grant)`,
      body: { error: { errorSummary: 'token-tap: no captured upstream login for this user' } },
    };
  }
  // The session came through the provider's IdP whether or not a grant matched: its idp_claim still says so.
  const commands = provider ? buildCommands(provider, hookRequest, undefined) : [];
  const claims = addedClaimNames(commands);
  if (claims.length > 0) return { ...base, answer: 'commands', detail: `${why}; added ${claims.join(' ')}`, claims, body: { commands } };
  return { ...base, answer: 'none', detail: why, body: { commands: [] } };
}

export async function startHookServer(options: HookServerOptions): Promise<HookServer> {
  const { config, logger } = options;
  const { store, audit } = options;
  const finder = new GrantFinder({ config, store, captures: options.captures });
  const authenticate = createHookAuthenticator(config.authentication, {
    onKeyFetch: ({ ok, problem }) => {
      if (!ok) logger.warn({ problem }, "okta hook: cannot fetch the authorization server's keys; bearer tokens are refused until they can be");
    },
  });
  const metrics = createHookMetrics(options.registry);
  const refusals = new HookRefusals({
    audit: options.refusalAudit,
    logger,
    intervalMs: options.refusalSummaryMs ?? DEFAULT_REFUSAL_SUMMARY_MS,
    ...(options.refusalMaxPeers ? { maxPeers: options.refusalMaxPeers } : {}),
    summarised: metrics.refusalsSummarised,
  });

  async function handle(request: http.IncomingMessage): Promise<CallResult> {
    const auth = await authenticate(request.headers);
    if (!auth.ok) return { status: 401, body: undefined, outcome: 'unauthenticated', answer: 'refused', detail: auth.reason };
    const raw = await readBody(request, MAX_HOOK_REQUEST_BYTES);
    if (raw === 'too_large') return { status: 413, body: undefined, outcome: 'bad_request', answer: 'refused', detail: 'request over 256 KiB' };
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch {
      return {
        status: 400,
        body: { error: { errorSummary: 'token-tap: the request is not JSON' } },
        outcome: 'bad_request',
        answer: 'refused',
        detail: 'not JSON',
      };
    }
    const hookRequest = readTokenHookRequest(parsed);
    if (typeof hookRequest === 'string')
      return { status: 400, body: { error: { errorSummary: `token-tap: ${hookRequest}` } }, outcome: 'bad_request', answer: 'refused', detail: hookRequest };
    const lookup = await finder.find(hookRequest);
    if (lookup.outcome !== 'found') return answerFor(lookup, hookRequest);
    const commands: HookCommand[] = buildCommands(lookup.provider, hookRequest, lookup.grant.claims ?? {});
    const claims = addedClaimNames(commands);
    return {
      status: 200,
      body: { commands },
      outcome: 'patched',
      answer: commands.length > 0 ? 'commands' : 'none',
      idp: lookup.provider.idp,
      subject: lookup.grant.subject,
      detail: `okta idp ${lookup.provider.oktaIdpId}; added ${claims.length > 0 ? claims.join(' ') : 'nothing (no mapped claim in the upstream id_token)'}${lookup.grant.verified ? '' : '; unverified grant (allow_unverified)'}`,
      claims,
      waitedMs: lookup.waitedMs,
    };
  }

  function send(response: http.ServerResponse, status: number, body: unknown): void {
    if (body === undefined) {
      response.writeHead(status, { 'content-length': 0, 'cache-control': 'no-store' });
      response.end();
      return;
    }
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    response.end(text);
  }

  const server = http.createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== OKTA_HOOK_PATH) return send(response, 404, undefined);
    if (request.method !== 'POST') {
      response.setHeader('allow', 'POST');
      return send(response, 405, undefined);
    }
    const endTimer = metrics.callSeconds.startTimer();
    const started = Date.now();
    void (async () => {
      let result: CallResult;
      try {
        result = await handle(request);
      } catch (error) {
        logger.error({ err: describeError(error) }, 'okta hook: cannot answer; Okta issues its tokens unchanged');
        result = { status: 500, body: undefined, outcome: 'internal', answer: 'refused', detail: 'lookup failed' };
      }
      if (REFUSED_OUTCOMES.has(result.outcome)) {
        // Nothing was read for the caller: answered at once, its row and log line summarised.
        send(response, result.status, result.body);
        metrics.calls.inc({ idp: '', outcome: result.outcome, answer: result.answer });
        endTimer({ outcome: result.outcome });
        refusals.record({
          peer: request.socket.remoteAddress ?? 'unknown',
          outcome: result.outcome,
          reason: result.detail ?? result.outcome,
          status: result.status,
          durationMs: Date.now() - started,
        });
        return;
      }
      try {
        await audit.record({
          operation: 'okta_hook',
          outcome: result.outcome,
          caller: 'okta',
          peer: request.socket.remoteAddress,
          idp: result.idp,
          subject: result.subject,
          detail: result.detail,
        });
      } catch (error) {
        // An unaudited read is not answered (as in the TokenVault API).
        logger.error({ err: describeError(error) }, 'okta hook: cannot write the access_events row; answer withheld');
        if (result.status === 200) result = { ...result, status: 500, body: undefined, outcome: 'internal', answer: 'refused' };
      }
      send(response, result.status, result.body);
      metrics.calls.inc({ idp: result.idp ?? '', outcome: result.outcome, answer: result.answer });
      endTimer({ outcome: result.outcome });
      const line = {
        idp: result.idp,
        subject: result.subject,
        outcome: result.outcome,
        answer: result.answer,
        status: result.status,
        claims: result.claims,
        waitedMs: result.waitedMs,
        durationMs: Date.now() - started,
        detail: result.detail,
      };
      if (result.outcome === 'ambiguous') logger.warn(line, 'okta hook call: the email matches grants of several upstream users; none used');
      else logger.info(line, 'okta hook call');
    })();
  });
  // Longer than Envoy's idle timeout for this cluster (envoyconfig/okta-hook.ts), so Envoy closes
  // idle connections first and never sends a call on one the server is closing.
  server.keepAliveTimeout = 75_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;

  await listen(server, options.listen.host, options.listen.port).catch((error: unknown) => {
    throw new Error(`cannot listen for the Okta hook on ${formatHostPort(options.listen)}: ${asError(error).message}`, { cause: error });
  });
  refusals.start();
  const port = (server.address() as AddressInfo).port;
  const address = { host: options.listen.host, port };
  logger.info(
    { hookListen: formatHostPort(address), path: OKTA_HOOK_PATH, auth: config.authentication.kind, providers: config.providers.size },
    'okta hook ready',
  );
  return {
    address,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      // The refusals counted since the last summary, before the pool goes (the sidecar ends it after this).
      await refusals.close();
    },
  };
}
