// Plain http is accepted only to this machine (a test IdP, a local JWKS): nothing on the way can
// read or swap what it carries.

/** 127.0.0.1, localhost or [::1]: this machine. */
export function isLoopbackUrl(url: URL): boolean {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}
