// The envoy-config command's flags that name IdPs and networks (--idp, --userinfo, --allow-source),
// parsed into the renderer's options; each error says which flag and what it should look like.
import net from 'node:net';
import { IDP_NAME_RULE, isIdpName } from '../contract.js';
import type { Cidr, IdpRoute, ProfileRoute } from './options.js';

/** Parses `NAME=URL` from the command line (--idp). */
export function parseIdpFlag(text: string): IdpRoute {
  const { name, url } = parseNamedUrl(text, '--idp', 'entra=https://login.microsoftonline.com/TENANT/oauth2/v2.0/token');
  return { name, tokenUrl: url };
}

function parseNamedUrl(text: string, flag: string, example: string): { name: string; url: URL } {
  const separator = text.indexOf('=');
  if (separator <= 0) throw new Error(`${flag} must be NAME=URL (for example ${example}), got "${text}"`);
  const name = text.slice(0, separator);
  const rawUrl = text.slice(separator + 1);
  if (!isIdpName(name)) throw new Error(`IdP name "${name}" must be ${IDP_NAME_RULE}`);
  let tokenUrl: URL;
  try {
    tokenUrl = new URL(rawUrl);
  } catch {
    throw new Error(`IdP "${name}": "${rawUrl}" is not a URL`);
  }
  if (tokenUrl.protocol !== 'https:' && tokenUrl.protocol !== 'http:') throw new Error(`IdP "${name}": ${flag} URL must be http or https`);
  if (tokenUrl.username || tokenUrl.password) throw new Error(`IdP "${name}": ${flag} URL must not carry credentials`);
  if (tokenUrl.hash) throw new Error(`IdP "${name}": ${flag} URL must not have a #fragment`);
  return { name, url: tokenUrl };
}

/** Parses `NAME=URL` for --userinfo, with an optional subject path from --userinfo-subject. */
export function parseProfileFlag(text: string, subjectFields: ReadonlyMap<string, string> = new Map()): ProfileRoute {
  const { name, url } = parseNamedUrl(text, '--userinfo', 'github=https://api.github.com/user');
  const subjectField = subjectFields.get(name);
  if (subjectField !== undefined && !/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(subjectField)) {
    throw new Error(`--userinfo-subject for "${name}" must be a dotted field path such as id or data.id`);
  }
  return { name, profileUrl: url, ...(subjectField ? { subjectField } : {}) };
}

/** An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`; a bare address is one host) from --allow-source. */
export function parseCidr(text: string): Cidr {
  const [address = '', prefix, extra] = text.trim().split('/');
  const family = net.isIP(address);
  const max = family === 6 ? 128 : 32;
  const prefixLength = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
  if (family === 0 || extra !== undefined || !(prefixLength >= 0 && prefixLength <= max)) {
    throw new Error(`--allow-source must be an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32, got "${text}"`);
  }
  return { address, prefixLength };
}
