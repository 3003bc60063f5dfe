// Loaded with `node --import` (hiddenPackagesEnv): the packages named in TOKEN_TAP_TEST_HIDDEN_PACKAGES
// cannot be imported (hidden-packages.ts's resolve hook) nor required.
import Module, { register } from 'node:module';

const hidden = (process.env.TOKEN_TAP_TEST_HIDDEN_PACKAGES ?? '').split(',').filter(Boolean);
register('./hidden-packages.js', import.meta.url, { data: { hidden } });

// require() and require.resolve() do not pass through the hook: Node's CommonJS resolver refuses them.
const commonJs = Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string };
const resolveFilename = commonJs._resolveFilename;
commonJs._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]) {
  if (hidden.some((name) => request === name || request.startsWith(`${name}/`))) {
    throw Object.assign(new Error(`Cannot find module '${request}'`), { code: 'MODULE_NOT_FOUND' });
  }
  return resolveFilename.call(this, request, ...rest);
};
