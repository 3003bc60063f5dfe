// One Exchange per ext_proc stream, that is per HTTP request through a token route. It collects
// the upstream response (status, headers, body chunks up to a limit) and says what to reply.
// No parsing and no I/O here: the server hands the finished ObservedResponse to capture.
import type { ObservedResponse, RouteKind } from '../capture/types.js';
import { isIdpName, ROUTE_METADATA_ATTRIBUTE, ROUTE_NAME_ATTRIBUTE } from '../contract.js';
import type { HeaderValue, ProcessingRequest, ProcessingResponse, ProtoValue } from './protocol.js';

export interface ExchangeLimits {
  /** Body bytes kept; beyond this the response is marked truncated and later recorded as too_large. */
  maxBodyBytes: number;
}

type State = 'awaiting_response' | 'collecting_body' | 'complete';

const CONTINUE = { response: {} } as const;

/** The empty CONTINUE reply for each message kind; the reply kind must match the request kind. */
function continueReply(request: ProcessingRequest): ProcessingResponse | undefined {
  if (request.request_headers) return { request_headers: CONTINUE };
  if (request.response_headers) return { response_headers: CONTINUE };
  if (request.request_body) return { request_body: CONTINUE };
  if (request.response_body) return { response_body: CONTINUE };
  if (request.request_trailers) return { request_trailers: {} };
  if (request.response_trailers) return { response_trailers: {} };
  return undefined;
}

/** What the Envoy route told the sidecar about this stream (gRPC initial metadata). */
export interface ExchangeRoute {
  idp: string | undefined;
  kind: RouteKind;
  subjectField: string | undefined;
}

/** `Bearer <token>` (RFC 6750), or GitHub's older `token <token>`. */
export function bearerTokenOf(authorization: string): string | undefined {
  const match = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(authorization);
  return match?.[1];
}

function valueText(value: ProtoValue | undefined): string | undefined {
  const text = value?.string_value ?? value?.stringValue;
  return typeof text === 'string' && text.trim() !== '' ? text : undefined;
}

/**
 * One attribute from a message's `attributes` map. Envoy keys the map by the ext_proc filter's
 * name, which a control plane picks (Envoy Gateway names it per policy), so every key is looked at.
 */
function attributeText(request: ProcessingRequest, attribute: string): string | undefined {
  for (const struct of Object.values(request.attributes ?? {})) {
    const text = valueText(struct?.fields?.[attribute]);
    if (text !== undefined) return text;
  }
  return undefined;
}

function headerText(header: HeaderValue): string {
  if (header.raw_value && header.raw_value.length > 0) return header.raw_value.toString('latin1');
  return header.value ?? '';
}

export class Exchange {
  private state: State = 'awaiting_response';
  private status: number | undefined;
  private readonly headers = new Map<string, string>();
  private readonly chunks: Buffer[] = [];
  private bodyBytes = 0;
  private bodyTruncated = false;
  private startedAt: number;
  private finished = false;
  private bearerToken: string | undefined;
  private routeName: string | undefined;
  private routeMetadata: string | undefined;

  constructor(
    readonly route: ExchangeRoute,
    private readonly limits: ExchangeLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
  }

  get idp(): string | undefined {
    return this.route.idp;
  }

  /**
   * Takes one message from Envoy. Returns the reply to send at once (none in observability mode,
   * where Envoy ignores replies) and whether the response is now complete.
   */
  accept(request: ProcessingRequest): { reply: ProcessingResponse | undefined; complete: boolean } {
    const reply = request.observability_mode ? undefined : continueReply(request);
    if (this.state !== 'complete') this.observe(request);
    return { reply, complete: this.state === 'complete' };
  }

  private observe(request: ProcessingRequest): void {
    // Envoy sends the configured response attributes once, with the response headers; kept as
    // text here and matched to an IdP on the main thread (config/route-idps.ts). Metadata that
    // names an IdP wins over them, so then they are not carried at all.
    if (request.attributes && !(this.route.idp && isIdpName(this.route.idp))) {
      this.routeName ??= attributeText(request, ROUTE_NAME_ATTRIBUTE);
      this.routeMetadata ??= attributeText(request, ROUTE_METADATA_ATTRIBUTE);
    }
    if (request.request_headers) {
      // Only a profile route asks for request headers, and only its bearer token is kept: the
      // token whose user the profile names. Nothing else of Okta's request is read.
      if (this.route.kind !== 'profile') return;
      const authorization = request.request_headers.headers?.headers?.find((header) => header.key?.toLowerCase() === 'authorization');
      this.bearerToken = authorization ? bearerTokenOf(headerText(authorization)) : undefined;
      return;
    }
    if (request.response_headers) {
      this.startedAt = this.now();
      for (const header of request.response_headers.headers?.headers ?? []) {
        // Envoy names every header (its proto requires a key); one without is not a header.
        const name = header.key?.toLowerCase();
        if (name === undefined) continue;
        if (name === ':status') this.status = Number.parseInt(headerText(header), 10) || undefined;
        else if (!name.startsWith(':')) {
          const previous = this.headers.get(name);
          this.headers.set(name, previous === undefined ? headerText(header) : `${previous}, ${headerText(header)}`);
        }
      }
      this.state = request.response_headers.end_of_stream ? 'complete' : 'collecting_body';
      return;
    }
    if (request.response_body) {
      // A body before headers would be a protocol error by Envoy; keep it anyway, never throw.
      this.appendBody(request.response_body.body);
      if (request.response_body.end_of_stream) this.state = 'complete';
      else if (this.state === 'awaiting_response') this.state = 'collecting_body';
      return;
    }
    if (request.response_trailers) this.state = 'complete';
  }

  private appendBody(chunk: Buffer | undefined): void {
    if (!chunk || chunk.length === 0) return;
    const room = this.limits.maxBodyBytes - this.bodyBytes;
    if (chunk.length > room) {
      this.bodyTruncated = true;
      if (room > 0) this.chunks.push(chunk.subarray(0, room));
      this.bodyBytes = this.limits.maxBodyBytes;
      return;
    }
    this.chunks.push(chunk);
    this.bodyBytes += chunk.length;
  }

  /** finish() has run: the response (if any) went to capture already. */
  get wasHandedOff(): boolean {
    return this.finished;
  }

  get hasResponse(): boolean {
    return this.status !== undefined;
  }

  /**
   * Ends the exchange: once, when the response completed or the stream ended without
   * end_of_stream. Returns undefined when no response was seen at all, or when already finished.
   */
  finish(): ObservedResponse | undefined {
    if (this.finished) return undefined;
    this.finished = true;
    if (this.status === undefined && this.chunks.length === 0) return undefined;
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bodyBytes);
    return {
      idp: this.route.idp,
      ...(this.routeName !== undefined ? { routeName: this.routeName } : {}),
      ...(this.routeMetadata !== undefined ? { routeMetadata: this.routeMetadata } : {}),
      routeKind: this.route.kind,
      subjectField: this.route.subjectField,
      bearerToken: this.bearerToken,
      status: this.status,
      headers: this.headers,
      body,
      bodyTruncated: this.bodyTruncated,
      complete: this.state === 'complete' || this.isBodyCompleteByLength(body.length),
      startedAt: this.startedAt,
    };
  }

  private isBodyCompleteByLength(length: number): boolean {
    const declared = this.headers.get('content-length');
    return declared !== undefined && Number.parseInt(declared, 10) === length;
  }
}
