// What a reader without `read_refresh_token` may see of a grant's extras (the token response's
// non-standard fields): an IdP may put a refresh token, or another long-lived credential, anywhere
// in them (Slack's authed_user.refresh_token, an incoming_webhook URL). Pure: a value in, a copy out.

/**
 * Parts of a field name that mark a token or a secret, matched against the name lower-cased with
 * everything but a-z and 0-9 removed (refresh_token, refreshToken and REFRESH-TOKEN read alike).
 */
const SECRET_NAME_PARTS = [
  'token', // refresh_token, access_token, id_token, xoxe_token, ...
  'secret', // client_secret, signing_secret
  'password',
  'passwd',
  'passphrase',
  'assertion', // SAML or JWT bearer assertions
  'credential',
  'cookie',
  'webhook', // Slack's incoming_webhook: its url posts as the app
  'privatekey',
  'apikey',
  'accesskey',
  'signingkey',
  'sessionkey',
  'clientkey',
] as const;

/**
 * Names that carry a token's metadata, not the token: kept although they contain a part above
 * (token_type, refresh_token_expires_in, refresh_token_expires_at). What is under them is still
 * filtered.
 */
const METADATA_SUFFIXES = ['type', 'expiresin', 'expiresat'] as const;

/** Deeper than this (the capture path refuses bodies nested past 32) nothing is shown at all. */
const MAX_DEPTH = 64;

/** The field name looks like it holds a token or a secret (the rule above). */
export function isSecretFieldName(name: string): boolean {
  const normalized = name.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (METADATA_SUFFIXES.some((suffix) => normalized.endsWith(suffix))) return false;
  return SECRET_NAME_PARTS.some((part) => normalized.includes(part));
}

/**
 * A copy of `extras` without every field, at any depth (objects and arrays), whose name looks like a
 * token or a secret. Values are kept as they are; only names are judged, so a secret under an
 * innocent name (`data`) is not recognised.
 */
export function withoutSecretFields(extras: Record<string, unknown>): Record<string, unknown> {
  return filterObject(extras, 1);
}

function filterValue(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object') return value;
  // Past the limit the subtree is dropped rather than shown unfiltered.
  if (depth > MAX_DEPTH) return null;
  if (Array.isArray(value)) return value.map((item) => filterValue(item, depth + 1));
  return filterObject(value as Record<string, unknown>, depth);
}

function filterObject(object: Record<string, unknown>, depth: number): Record<string, unknown> {
  // Object.fromEntries defines own properties: a "__proto__" field stays a field.
  return Object.fromEntries(
    Object.entries(object)
      .filter(([name]) => !isSecretFieldName(name))
      .map(([name, value]) => [name, filterValue(value, depth + 1)]),
  );
}
