// Runs a child `node` as if some packages were not installed (the sidecar image's `npm ci --omit=dev`
// leaves the dev dependencies out): a resolve hook (and, for require, Node's CommonJS resolver) refuse
// them, as Node does a missing package.
// hiddenPackagesEnv() gives the child's environment; the hook itself is below, registered in the
// child by hidden-packages-register.ts.
import type { ResolveHook } from 'node:module';

const REGISTER = new URL('./hidden-packages-register.js', import.meta.url).href;

/** Environment for a child process in which `packages` (and their subpaths) cannot be imported. */
export function hiddenPackagesEnv(packages: readonly string[]): Record<string, string> {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${REGISTER}`.trim(),
    TOKEN_TAP_TEST_HIDDEN_PACKAGES: packages.join(','),
  };
}

let hidden: readonly string[] = [];

export function initialize(data: { hidden: readonly string[] }): void {
  hidden = data.hidden;
}

export const resolve: ResolveHook = (specifier, context, nextResolve) => {
  const name = hidden.find((candidate) => specifier === candidate || specifier.startsWith(`${candidate}/`));
  if (name) throw Object.assign(new Error(`Cannot find package '${name}' imported from ${context.parentURL}`), { code: 'ERR_MODULE_NOT_FOUND' });
  return nextResolve(specifier, context);
};
