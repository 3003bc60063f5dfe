// A module imported on first use: a sidecar that never verifies or refreshes never loads jose or
// oauth4webapi (some MB of its memory). The import is shared once it succeeds; a failed one is not
// kept, so the next use tries again instead of failing until a restart.
export function lazyImport<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () =>
    (loading ??= load().catch((error: unknown) => {
      loading = undefined;
      throw error;
    }));
}
