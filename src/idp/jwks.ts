// Signing keys of the issuers whose tokens the sidecar checks: upstream IdPs' id_tokens
// (idp/verify.ts), the bearer tokens of Okta's authorization server (hook/auth.ts), and the token
// exchange's subject tokens. One cache per caller, one entry per key set URL in it.
//
// Keys come from jwks_uri, or from the issuer's discovery document (whose `issuer` must be the
// pinned one): https (or loopback http), no redirects, at most MAX_DOCUMENT_BYTES, within the
// source's timeout. They are fetched on first use and again before use once older than maxAgeMs;
// a token naming a key the set lacks may fetch it again (newerThan, getKey). Any fetch, however it
// goes, holds the next off for the cooldown: a flood of tokens naming unknown keys, or an issuer
// that is down, costs one request per cooldown. Only asymmetric algorithms verify (jose's key sets
// also refuse secret keys). Nothing here logs or throws a key, a token or an answer's body.
import type { CompactVerifyGetKey, JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import type { AuthorizationServer } from 'oauth4webapi';
import { isHttpsOrLoopbackUrl } from '../lib/loopback-url.js';
import { limitedFetch, readLimited } from './http.js';
import { lazyImport } from '../lib/lazy-import.js';
import { asError, TokenTapError } from '../lib/errors.js';
import { errorName } from '../lib/error-description.js';

// Imported on first use (a fetch): a sidecar that checks no signature never loads them. A failed
// import fails the fetch like an unreachable issuer.
const loadJose = lazyImport(() => import('jose'));
const loadOauth = lazyImport(() => import('oauth4webapi'));

/** Asymmetric signatures only: `none` and HMAC (a key the issuer shares with its clients) never verify. */
export const ASYMMETRIC_ALGORITHMS: readonly string[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** Largest discovery document or key set read; the rest of a longer answer is not. */
export const MAX_DOCUMENT_BYTES = 512 * 1024;
/** Keys older than this are refetched before use (a key the issuer withdrew stops verifying). */
export const DEFAULT_MAX_AGE_MS = 10 * 60_000;

/** Where an issuer publishes its keys, and who asks. */
export interface JwksSource {
  /** As fetches are reported (an IdP's name, `okta-hook`). */
  name: string;
  /** Compared with the discovery document's `issuer` as written. */
  issuer: string;
  /** undefined: from the issuer's discovery document. */
  jwksUri: URL | undefined;
  /** Per request (discovery, key set). */
  timeoutMs: number;
}

export type KeyFetchObserver = (event: { idp: string; ok: boolean; problem?: string }) => void;

export interface JwksCacheOptions {
  /** After a fetch starts, the next waits this long, whatever its outcome. */
  cooldownMs: number;
  /** Default DEFAULT_MAX_AGE_MS. */
  maxAgeMs?: number;
  now?: () => number;
  /** After each fetch, once for each source name sharing its URL. */
  onFetch?: KeyFetchObserver;
}

/** The keys one fetch got. */
export interface KeySnapshot {
  lookup: CompactVerifyGetKey;
  /** When the fetch that got these keys started (epoch ms). */
  fetchedAt: number;
}

/** getKey found no keys to check with (none fetched yet, and the cooldown holds the next fetch off). */
export class JwksUnavailable extends TokenTapError {
  override name = 'JwksUnavailable';
  readonly code = 'KEYS_UNAVAILABLE';
  constructor() {
    super("the issuer's signing keys cannot be fetched (retried after the cooldown)", 'unavailable');
  }
}

function describeFetchError(error: unknown): string {
  if (errorName(error) === 'TimeoutError' || errorName(error) === 'AbortError') return 'timeout';
  const cause = (error as { cause?: { code?: string } }).cause;
  return cause?.code ?? errorName(error);
}

/** A small JSON document: https (or loopback http), no redirects, size-capped, timed out. */
async function fetchJson(url: URL, timeoutMs: number, what: string): Promise<unknown> {
  if (!isHttpsOrLoopbackUrl(url)) throw new Error(`${what} is not https`);
  let response: Response;
  try {
    response = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (error) {
    throw new Error(`${what}: ${describeFetchError(error)}`);
  }
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => undefined);
    throw new Error(`${what}: HTTP ${response.status}`);
  }
  // Streamed with the limit: an endless answer is cut off at MAX_DOCUMENT_BYTES, never read whole;
  // the timeout covers the body too (a stalled one is cut off).
  const body = await readLimited(response, MAX_DOCUMENT_BYTES).catch(() => null);
  if (body === null) throw new Error(`${what}: answer cut off`);
  if (body === undefined) throw new Error(`${what}: answer over ${MAX_DOCUMENT_BYTES} bytes`);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error(`${what}: not JSON`);
  }
}

/** jwks_uri from `issuer/.well-known/openid-configuration`, whose `issuer` must be the pinned one. */
async function discoverJwksUri(source: JwksSource): Promise<URL> {
  const issuer = new URL(source.issuer);
  const oauth = await loadOauth();
  let response: Response;
  try {
    response = await oauth.discoveryRequest(issuer, {
      algorithm: 'oidc',
      signal: AbortSignal.timeout(source.timeoutMs),
      [oauth.allowInsecureRequests]: issuer.protocol === 'http:',
      [oauth.customFetch]: limitedFetch(MAX_DOCUMENT_BYTES, 'discovery'),
    });
  } catch (error) {
    if (/^discovery: answer over/.test(asError(error).message)) throw error;
    throw new Error(`discovery: ${describeFetchError(error)}`);
  }
  let metadata: AuthorizationServer;
  try {
    metadata = await oauth.processDiscoveryResponse(issuer, response);
  } catch {
    // Its errors carry the document as their cause: only the status is told.
    throw new Error(`discovery: not a discovery document for the pinned issuer (HTTP ${response.status})`);
  }
  if (metadata.issuer !== source.issuer) throw new Error('discovery: issuer differs from the pinned issuer');
  if (typeof metadata.jwks_uri !== 'string') throw new Error('discovery: no jwks_uri');
  let url: URL;
  try {
    url = new URL(metadata.jwks_uri);
  } catch {
    throw new Error('discovery: jwks_uri is not a URL');
  }
  if (!isHttpsOrLoopbackUrl(url)) throw new Error('discovery: jwks_uri is not https');
  return url;
}

/** One key set: fetched on demand, at most once per cooldown, shared by the sources that name it. */
export class IssuerKeys {
  private snapshot: KeySnapshot | undefined;
  private jwksUri: URL | undefined;
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private lastFailed = false;
  private inflight: Promise<void> | undefined;
  private readonly names = new Set<string>();
  private readonly now: () => number;

  constructor(
    private readonly source: JwksSource,
    private readonly options: JwksCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.jwksUri = source.jwksUri;
    this.names.add(source.name);
  }

  /** Another source with the same URL: its name is told of every fetch too. */
  sharedWith(name: string): void {
    this.names.add(name);
  }

  /** The keys of the latest successful fetch. */
  get current(): KeySnapshot | undefined {
    return this.snapshot;
  }

  /** When the next fetch may start (epoch ms). */
  get nextFetchAt(): number {
    return this.lastAttempt + this.options.cooldownMs;
  }

  /** The latest fetch failed (the keys, if any, are older ones). */
  get lastFetchFailed(): boolean {
    return this.lastFailed;
  }

  /** Fetches the keys unless a fetch started within the cooldown; joins one in flight. */
  async refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    if (this.now() < this.nextFetchAt) return;
    this.inflight = this.fetchKeys().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /**
   * The keys to check a token with: fetched first when there are none or they are older than
   * maxAgeMs (cooldown allowing). Keys gone stale that cannot be refetched are still the issuer's best word.
   */
  async usable(): Promise<KeySnapshot | undefined> {
    if (!this.snapshot || this.now() - this.snapshot.fetchedAt > (this.options.maxAgeMs ?? DEFAULT_MAX_AGE_MS)) await this.refresh();
    return this.snapshot;
  }

  /**
   * Keys newer than `stale`, which lacked a token's key: the set is fetched again when the cooldown
   * allows (the issuer may have published the key since). undefined: nothing newer (the cooldown,
   * or the fetch failed).
   */
  async newerThan(stale: KeySnapshot): Promise<KeySnapshot | undefined> {
    if (this.snapshot === stale) await this.refresh();
    return this.snapshot !== stale ? this.snapshot : undefined;
  }

  /**
   * For jose's jwtVerify: the key a token's header names, with one refetch for a key the set lacks.
   * Throws JwksUnavailable without keys, jose's JWKSNoMatchingKey when the set has none for the header.
   */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const { errors } = await loadJose();
    if (!ASYMMETRIC_ALGORITHMS.includes(header.alg)) throw new errors.JOSEAlgNotAllowed('"alg" is not an asymmetric algorithm');
    const snapshot = await this.usable();
    if (!snapshot) throw new JwksUnavailable();
    try {
      return await snapshot.lookup(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
      const newer = await this.newerThan(snapshot);
      if (!newer) throw error;
      return newer.lookup(header, token);
    }
  };

  private async fetchKeys(): Promise<void> {
    const startedAt = this.now();
    this.lastAttempt = startedAt;
    let jwksInvalid: (new (...args: never[]) => Error) | undefined;
    let problem: string | undefined;
    try {
      const { createLocalJWKSet, errors } = await loadJose();
      jwksInvalid = errors.JWKSInvalid;
      this.jwksUri ??= await discoverJwksUri(this.source);
      const lookup = createLocalJWKSet((await fetchJson(this.jwksUri, this.source.timeoutMs, 'jwks_uri')) as JSONWebKeySet);
      this.snapshot = { lookup, fetchedAt: startedAt };
      this.lastFailed = false;
    } catch (error) {
      // jose's JWKSInvalid and our own messages name no key material; nothing else is quoted.
      problem =
        jwksInvalid && error instanceof jwksInvalid ? 'jwks_uri: not a JSON Web Key Set' : error instanceof Error ? error.message : 'the key fetch failed';
      this.lastFailed = true;
    }
    for (const idp of this.names) this.options.onFetch?.(problem === undefined ? { idp, ok: true } : { idp, ok: false, problem });
  }
}

/** The key sets one caller uses, one per URL (the first source's timeout applies to it). */
export class JwksCache {
  private readonly entries = new Map<string, IssuerKeys>();

  constructor(private readonly options: JwksCacheOptions) {}

  get now(): () => number {
    return this.options.now ?? Date.now;
  }

  /** The keys of `source`: its jwks_uri's set, or the one its issuer's discovery document names. */
  keysOf(source: JwksSource): IssuerKeys {
    // A discovered set is keyed by the issuer as written: discovery checks it as written.
    const key = source.jwksUri ? `jwks ${source.jwksUri.href}` : `discovery ${source.issuer}`;
    const existing = this.entries.get(key);
    if (existing) {
      existing.sharedWith(source.name);
      return existing;
    }
    const created = new IssuerKeys(source, this.options);
    this.entries.set(key, created);
    return created;
  }
}
