// The demo IdP doubles as the end-to-end tests' upstream IdP.
export * from '../../src/demo/oidc-idp.js';
