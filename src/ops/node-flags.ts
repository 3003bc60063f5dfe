/** Node flags `token-tap serve` runs with: the deploy files and the bench start serve with these. */
export const SERVE_NODE_FLAGS: readonly string[] = [];
