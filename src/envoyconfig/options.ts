// What the Envoy bootstrap is rendered from: the IdPs to relay, where Envoy and the sidecar listen,
// and the guards. Plain data, shared by the flag parsers, the renderer's parts and the gateway renderers.
import type { HostPort, ListenAddress } from '../config/values.js';
import type { RateLimit } from './rate-limit.js';

export type ProcessingMode = 'observability' | 'buffered';

export interface IdpRoute {
  /** Route and cluster name, and what the sidecar stores the grant under. */
  name: string;
  /** The IdP's real token endpoint. */
  tokenUrl: URL;
}

/** An IdP's profile (userinfo) endpoint, relayed so the sidecar learns who a token belongs to. */
export interface ProfileRoute {
  name: string;
  profileUrl: URL;
  /** Dotted path of the user id in the profile JSON; the sidecar tries sub, id, user_id without it. */
  subjectField?: string;
}

export interface EnvoyConfigOptions {
  idps: IdpRoute[];
  /** Profile routes for IdPs whose token response names no user (no id_token). */
  profiles?: ProfileRoute[];
  listen: HostPort;
  /** The sidecar's ext_proc listener: a Unix socket (Envoy's `pipe`) or HOST:PORT. */
  sidecar: ListenAddress;
  /** mTLS to the sidecar: Envoy's client certificate and key, and the CA the sidecar's certificate chains to. */
  sidecarTls?: { certFile: string; keyFile: string; caFile: string };
  /** Envoy-side guards: at most `requests` per `perSeconds` on each token route (local rate limit; 429 beyond). */
  tokenRateLimit?: RateLimit;
  /** Envoy-side guards: only these source networks reach any route (RBAC on the connection's address; 403 otherwise). */
  allowSources?: Cidr[];
  admin: HostPort;
  /** Envoy's readiness listener (GET /ready: 200 only while Envoy sees the sidecar healthy; readiness.ts). */
  ready?: HostPort;
  mode: ProcessingMode;
  /** How long Envoy waits for each sidecar reply in buffered mode before failing open. */
  messageTimeoutMs?: number;
  /** Circuit breaker: ext_proc streams open to the sidecar at once; past it Envoy fails open (default 4096). */
  sidecarMaxStreams?: number;
  /** CA bundle for verifying https IdPs. */
  upstreamCaFile?: string;
  /** Serve Okta over TLS (Okta requires https) with this certificate chain and key. */
  tls?: { certFile: string; keyFile: string };
  /** The sidecar's Okta token inline hook listener: adds POST /okta/token-hook (envoyconfig/okta-hook.ts). */
  oktaHook?: HostPort;
  /** A token bucket per client address on the hook route (429 beyond it); default DEFAULT_OKTA_HOOK_RATE_LIMIT, false: none. */
  oktaHookRateLimit?: RateLimit | false;
  /**
   * Proxies in front of Envoy that append the client's address to X-Forwarded-For: the client address
   * (the hook's per-client key, the access log's downstream address) is then the one this many hops
   * from the right of that header. Default 0: the connection's own address, whatever the header says.
   */
  xffTrustedHops?: number;
}

export interface Cidr {
  address: string;
  prefixLength: number;
}
