// oidc-provider as the demo IdP uses it: the subset of its API it calls (the package ships no
// TypeScript declarations) and its lazy import, quiet about the Node version.
import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * oidc-provider ships no TypeScript declarations (and @types/oidc-provider is
 * not installed), so this is the subset of the Provider API the harness uses.
 * Anything else is reachable through the index signature.
 */
export interface OidcGrant {
  readonly accountId?: string;
  readonly clientId?: string;
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(resource: string, scope: string): void;
  save(ttl?: number): Promise<string>;
}

export interface OidcInteractionDetails {
  uid: string;
  grantId?: string;
  returnTo: string;
  prompt: {
    name: string;
    reasons: string[];
    details: {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
      [key: string]: unknown;
    };
  };
  params: {
    client_id?: string;
    scope?: string;
    login_hint?: string;
    claims?: string;
    [key: string]: unknown;
  };
  session?: { accountId?: string; uid?: string; [key: string]: unknown };
}

export interface OidcProvider {
  readonly issuer: string;
  Grant: {
    new (init: { accountId: string; clientId: string }): OidcGrant;
    find(id: string): Promise<OidcGrant | undefined>;
  };
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<OidcInteractionDetails>;
  interactionResult(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<string>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  /** Koa's request listener. */
  callback(): (req: IncomingMessage, res: ServerResponse) => unknown;
  pathFor(name: string, options?: Record<string, unknown>): string;
  on(event: string, listener: (...args: any[]) => void): unknown;
  [key: string]: unknown;
}

export type ProviderConstructor = new (issuer: string, configuration: Record<string, unknown>) => OidcProvider;

let providerModule: Promise<ProviderConstructor> | undefined;

/**
 * oidc-provider 9 prints "Unsupported runtime. Use Node.js v22.x LTS ..." from
 * its entry module when running on Node 20. The module is loaded lazily here
 * and that single, exact message is dropped while the import evaluates.
 * (A non-literal specifier keeps TypeScript from demanding declarations.)
 */
export function loadProvider(): Promise<ProviderConstructor> {
  providerModule ??= (async () => {
    const specifier: string = 'oidc-provider';
    const originalWarn = console.warn;
    console.warn = (...args: unknown[]): void => {
      if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING: Unsupported runtime')) return;
      originalWarn.apply(console, args);
    };
    try {
      const mod = (await import(specifier)) as { default: ProviderConstructor };
      return mod.default;
    } finally {
      console.warn = originalWarn;
    }
  })();
  return providerModule;
}
