// The demo's Okta-playing client doubles as the end-to-end tests' client.
export * from '../../src/demo/okta-client.js';
