// The demo IdP doubles as the end-to-end tests' upstream IdP; here it also records every response
// its token endpoint writes, from the socket bytes, so a test can compare what the IdP wrote with
// what the client received through Envoy.
import { startDemoIdp, type DemoAccount, type DemoIdp, type DemoIdpOptions } from '../../src/demo/oidc-idp.js';
import { captureRawResponse, type RawHttpResponse } from './raw-http-response.js';

export { generateSigningJwk, type ServiceClient } from '../../src/demo/oidc-idp.js';
export type { RawHttpResponse } from './raw-http-response.js';

export type TestAccount = DemoAccount;
export type TestIdpOptions = Omit<DemoIdpOptions, 'onTokenRequest'>;

export interface TestIdp extends DemoIdp {
  /** Every response the token endpoint wrote, in order, parsed from the raw socket bytes. */
  tokenResponses: RawHttpResponse[];
}

export async function startTestIdp(options: TestIdpOptions = {}): Promise<TestIdp> {
  const tokenResponses: RawHttpResponse[] = [];
  const idp = await startDemoIdp({ ...options, onTokenRequest: (req, res) => captureRawResponse(req, res, (r) => tokenResponses.push(r)) });
  return { ...idp, tokenResponses };
}
