// The token exchange over HTTP(S), on its own listener: POST /oauth2/token (RFC 8693). Per request:
// read the form (bounded), authenticate the client (an API key), check the grant type and that the
// key may exchange, read the RFC 8693 parameters, and hand them to the operation
// (operations/exchange.ts). Every request past client authentication writes an access_events row
// (durable commit) before it is answered; requests refused before (unauthenticated, bad_request)
// are counted and summarised (refusals.ts). No token, secret or claim beyond the Okta user's id is
// ever logged, audited or put in an error.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { mayDo, mayUseIdp, type Authenticator } from '../api/auth.js';
import type { ApiTls } from '../config/token-vault.js';
import { formatHostPort, type HostPort } from '../config/values.js';
import { TOKEN_EXCHANGE_PATH } from '../contract.js';
import { asError } from '../lib/errors.js';
import { DEFAULT_REFUSAL_SUMMARY_MS } from '../lib/refusal-summary.js';
import type { ExchangeNotes, TokenExchange } from '../operations/exchange.js';
import type { AccessEventLog, ExchangeOutcome } from '../store/access-events.js';
import { describeError, errorCode, errorName } from '../lib/error-description.js';
import { isPostgresUnavailable } from '../store/errors.js';
import { ERROR_OF, errorAnswer, tokenAnswer, type HttpAnswer, type RefusedOutcome } from './answers.js';
import { authenticateClient } from './client-auth.js';
import { readClientCredentials, readExchangeParams, readForm, TOKEN_EXCHANGE_GRANT } from './form.js';
import { createExchangeMetrics } from './metrics.js';
import { ExchangeRefusals } from './refusals.js';
import { listen } from '../lib/listen.js';

/** A token request is a few KiB (a subject token and five short parameters). */
export const MAX_EXCHANGE_REQUEST_BYTES = 64 * 1024;
/** A token request's body arrives at once; one that trickles holds a connection for nothing. */
export const BODY_TIMEOUT_MS = 5_000;
/** The longest a TLS client may take to finish its handshake (Node's default is 120 s). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** After a refusal with Connection: close, how long the caller has to read it before the socket goes. */
const LINGER_MS = 1_000;

export interface ExchangeServer {
  address: HostPort;
  close(): Promise<void>;
}

export interface ExchangeServerOptions {
  listen: HostPort;
  tls: ApiTls | undefined;
  exchange: Pick<TokenExchange, 'exchange'>;
  authenticator: Pick<Authenticator, 'authenticateKey'>;
  /** Each authenticated request's row, durably committed before it is answered. */
  audit: Pick<AccessEventLog, 'record'>;
  /** The summary rows of refused requests (relaxed commit). */
  refusalAudit: Pick<AccessEventLog, 'record'>;
  logger: Logger;
  registry: Registry;
  refusalSummaryMs?: number;
  /** Open connections taken at most (TOKEN_TAP_EXCHANGE_MAX_CONNECTIONS); default 256. */
  maxConnections?: number;
}

type Handled =
  /** `close`: the body was not read to its end (too large, too slow): answered with Connection: close, then the socket goes. */
  | { kind: 'refused'; outcome: RefusedOutcome; reason: string; answer: HttpAnswer; apiKeyId?: string | undefined; close?: boolean }
  | { kind: 'audited'; outcome: ExchangeOutcome; answer: HttpAnswer; apiKeyId: string; caller: string; notes: ExchangeNotes };

/**
 * The body, or why not: over `limit` (by its Content-Length or as it comes) or not all there within
 * `timeoutMs`. Either way the rest is not read: the caller closes the connection (anyone can reach
 * this listener, and draining a body sent slowly or without end would hold the socket for them).
 */
function readBody(request: http.IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer | 'too_large' | 'too_slow'> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve('too_large');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (why: 'too_large' | 'too_slow') => {
      clearTimeout(timer);
      request.removeAllListeners('data');
      request.pause();
      resolve(why);
    };
    const timer = setTimeout(() => stop('too_slow'), timeoutMs);
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return stop('too_large');
      chunks.push(chunk);
    });
    request.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function tlsClientOf(request: http.IncomingMessage): string | undefined {
  const socket = request.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return undefined;
  const subject = socket.getPeerCertificate().subject as { CN?: string } | undefined;
  return subject?.CN;
}

export async function startExchangeServer(options: ExchangeServerOptions): Promise<ExchangeServer> {
  const { logger, exchange, authenticator } = options;
  const metrics = createExchangeMetrics(options.registry);
  const refusals = new ExchangeRefusals({
    audit: options.refusalAudit,
    logger,
    intervalMs: options.refusalSummaryMs ?? DEFAULT_REFUSAL_SUMMARY_MS,
    summarised: metrics.refusalsSummarised,
  });

  async function handle(request: http.IncomingMessage): Promise<Handled> {
    const badRequest = (reason: string): Extract<Handled, { kind: 'refused' }> => ({
      kind: 'refused',
      outcome: 'bad_request',
      reason,
      answer: errorAnswer('invalid_request', reason),
    });
    const raw = await readBody(request, MAX_EXCHANGE_REQUEST_BYTES, BODY_TIMEOUT_MS);
    if (raw === 'too_large') return { ...badRequest(`the request is over ${MAX_EXCHANGE_REQUEST_BYTES} bytes`), close: true };
    if (raw === 'too_slow') {
      const reason = `the request body did not arrive within ${BODY_TIMEOUT_MS / 1000} s`;
      return {
        kind: 'refused',
        outcome: 'bad_request',
        reason,
        close: true,
        answer: { status: 408, headers: { 'content-length': '0', 'cache-control': 'no-store' }, body: '' },
      };
    }
    const form = readForm(request.headers['content-type'], raw);
    if (!form.ok) return badRequest(form.problem);
    const read = readClientCredentials(request.headers.authorization, form.params);
    if (!read.ok) {
      // Both credentials at once is a malformed request (RFC 6749 §2.3); the rest are unauthenticated.
      if (read.malformed) return badRequest(read.problem);
      return {
        kind: 'refused',
        outcome: 'unauthenticated',
        reason: read.problem,
        answer: errorAnswer('invalid_client', 'client authentication failed', { basic: true }),
      };
    }
    const client = await authenticateClient(authenticator, read.credentials);
    if (!client.ok) {
      return {
        kind: 'refused',
        outcome: 'unauthenticated',
        reason: client.reason,
        apiKeyId: client.apiKeyId,
        answer: errorAnswer('invalid_client', 'client authentication failed', { basic: read.credentials.method === 'basic' }),
      };
    }
    const { caller } = client;
    const audited = (outcome: Exclude<ExchangeOutcome, 'ok'>, description: string, notes: ExchangeNotes = { detail: description }): Handled => ({
      kind: 'audited',
      outcome,
      answer: errorAnswer(ERROR_OF[outcome], description),
      apiKeyId: caller.apiKeyId,
      caller: caller.name,
      notes,
    });
    const grantType = form.params.get('grant_type');
    if (!grantType) return audited('invalid_request', 'grant_type is missing');
    if (grantType !== TOKEN_EXCHANGE_GRANT) return audited('unsupported_grant_type', `only grant_type ${TOKEN_EXCHANGE_GRANT} is served here`);
    if (!mayDo(caller, 'exchange')) return audited('unauthorized_client', 'this API key may not exchange tokens (it lacks the exchange operation)');
    const params = readExchangeParams(form.params);
    if (!params.ok) return audited(params.error, params.problem);
    try {
      const result = await exchange.exchange({ ...params.request, mayUseIdp: (idp) => mayUseIdp(caller, idp) });
      if (result.outcome !== 'ok') return audited(result.outcome, result.description, result.notes);
      return { kind: 'audited', outcome: 'ok', answer: tokenAnswer(result.token), apiKeyId: caller.apiKeyId, caller: caller.name, notes: result.notes };
    } catch (error) {
      // The client is known: audited like every other answer to it (a row it cannot open during a
      // key rollout, a bug), the error itself in the log only.
      logger.error({ err: describeError(error), apiKeyId: caller.apiKeyId }, 'token exchange: cannot answer');
      const code = errorCode(error);
      const detail = `internal error (${errorName(error)}${code ? ` ${code}` : ''})`;
      if (isPostgresUnavailable(error)) return audited('unavailable', 'the token store cannot be reached; try again', { detail });
      return audited('internal', 'internal error; the sidecar log has the details', { detail });
    }
  }

  function send(response: http.ServerResponse, answer: HttpAnswer): void {
    response.writeHead(answer.status, answer.headers);
    response.end(answer.body);
  }

  /** The answer, then the connection goes: at once when the caller closes, else after LINGER_MS (the caller reads the answer first). */
  function sendAndClose(request: http.IncomingMessage, response: http.ServerResponse, answer: HttpAnswer): void {
    const socket = request.socket;
    response.once('finish', () => setTimeout(() => socket.destroy(), LINGER_MS).unref());
    send(response, { ...answer, headers: { ...answer.headers, connection: 'close' } });
  }

  async function serve(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const endTimer = metrics.requestSeconds.startTimer();
    const started = Date.now();
    const peer = request.socket.remoteAddress ?? 'unknown';
    let handled: Handled;
    try {
      handled = await handle(request);
    } catch (error) {
      // Before the client is known (the key lookup): nothing was read for anyone, nothing is audited;
      // past it, handle() answers errors itself, audited.
      const unavailable = isPostgresUnavailable(error);
      logger.error({ err: describeError(error) }, 'token exchange: cannot answer');
      const answer = unavailable
        ? errorAnswer('temporarily_unavailable', 'the token store cannot be reached; try again')
        : errorAnswer('server_error', 'internal error; the sidecar log has the details');
      send(response, answer);
      metrics.requests.inc({ idp: '', outcome: unavailable ? 'unavailable' : 'internal' });
      endTimer({ outcome: unavailable ? 'unavailable' : 'internal' });
      return;
    }
    if (handled.kind === 'refused') {
      if (handled.close) sendAndClose(request, response, handled.answer);
      else send(response, handled.answer);
      metrics.requests.inc({ idp: '', outcome: handled.outcome });
      endTimer({ outcome: handled.outcome });
      refusals.record({ peer, outcome: handled.outcome, reason: handled.reason, apiKeyId: handled.apiKeyId });
      return;
    }
    let { answer, outcome } = handled;
    const { notes } = handled;
    const detail = [notes.oktaUser ? `okta user ${notes.oktaUser}` : undefined, notes.detail].filter(Boolean).join('; ') || undefined;
    try {
      await options.audit.record({
        operation: 'exchange',
        outcome,
        apiKeyId: handled.apiKeyId,
        caller: handled.caller,
        tlsClient: tlsClientOf(request),
        peer,
        idp: notes.idp,
        subject: notes.subject,
        detail,
      });
    } catch (error) {
      // An unaudited read is not answered (as in the TokenVault API and the hook).
      logger.error({ err: describeError(error) }, 'token exchange: cannot write the access_events row; answer withheld');
      answer = errorAnswer('temporarily_unavailable', 'the access record could not be written, so the answer is withheld; try again');
      outcome = 'unavailable';
    }
    send(response, answer);
    metrics.requests.inc({ idp: notes.idp ?? '', outcome });
    endTimer({ outcome });
    // The access_events row is the audit trail of every exchange, and the metrics count them: a line
    // per answered exchange at info cost ~35 µs of the ~900 µs of CPU one takes (bench/RESULTS.md), so
    // answers are logged at debug; refusals (a forged token, another IdP's user: probes) stay at info.
    const failed = outcome === 'internal' || outcome === 'unavailable';
    if (outcome === 'ok' && !logger.isLevelEnabled('debug')) return;
    const line = {
      idp: notes.idp,
      subject: notes.subject,
      oktaUser: notes.oktaUser,
      apiKeyId: handled.apiKeyId,
      outcome,
      status: answer.status,
      durationMs: Date.now() - started,
      detail: notes.detail,
    };
    if (failed) logger.warn(line, 'token exchange');
    else if (outcome === 'ok') logger.debug(line, 'token exchange');
    else logger.info(line, 'token exchange refused');
  }

  const onRequest = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== TOKEN_EXCHANGE_PATH) return send(response, { status: 404, headers: { 'content-length': '0' }, body: '' });
    if (request.method !== 'POST') return send(response, { status: 405, headers: { allow: 'POST', 'content-length': '0' }, body: '' });
    serve(request, response).catch((error: unknown) => {
      logger.error({ err: describeError(error) }, 'token exchange: request failed');
      if (!response.headersSent) send(response, errorAnswer('server_error', 'internal error; the sidecar log has the details'));
    });
  };
  const tls = options.tls;
  const server = tls
    ? https.createServer(
        {
          cert: tls.cert,
          key: tls.key,
          handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
          ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        },
        onRequest,
      )
    : http.createServer(onRequest);
  // Bounds on what anyone who reaches the listener can hold: connections, time to send headers,
  // and to send the whole request (the body has BODY_TIMEOUT_MS of its own). requestTimeout ends
  // with the request's last byte: the answer may still wait on an IdP's refresh.
  // A TLS handshake too (Node's default 120 s let a silent client hold one of maxConnections for minutes).
  server.maxConnections = options.maxConnections ?? 256;
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;

  await listen(server, options.listen.host, options.listen.port).catch((error: unknown) => {
    throw new Error(`cannot listen for the token exchange on ${formatHostPort(options.listen)}: ${asError(error).message}`, { cause: error });
  });
  refusals.start();
  const address = { host: options.listen.host, port: (server.address() as AddressInfo).port };
  logger.info(
    { exchangeListen: formatHostPort(address), path: TOKEN_EXCHANGE_PATH, tls: tls ? (tls.clientCa ? 'mtls' : 'tls') : 'none' },
    'token exchange ready',
  );
  return {
    address,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await refusals.close();
    },
  };
}
