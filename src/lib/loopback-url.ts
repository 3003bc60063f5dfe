// Plain http is accepted only to this machine (a test IdP, a local JWKS): nothing on the way can
// read or swap what it carries.

/** 127.0.0.1, localhost or [::1]: this machine. */
function isLoopbackUrl(url: URL): boolean {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

/** https, or plain http to this machine: the URLs the sidecar fetches from or is configured with. */
export function isHttpsOrLoopbackUrl(url: URL): boolean {
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackUrl(url));
}
