// Node flags `token-tap serve` runs with: the Dockerfile's sidecar ENTRYPOINT, bin/token-tap.js run
// as a program (`npx token-tap`: its sh line execs Node with them) and the bench start serve with
// these (test/integration/packaging.test.ts holds the Dockerfile and the bin to them). They cannot
// be set from inside the process: V8 sizes its heap and threads before any code runs.
//   --max-semi-space-size=1  young generation of 2 x 1 MiB instead of up to 2 x 16 MiB: the RSS a
//                            sidecar grows to under load (bench/RESULTS.md), for more frequent
//                            scavenges of a heap that holds little for long
//   --v8-pool-size=1         one V8 helper thread instead of one per core (each brings its own
//                            malloc arena): ~3 MB at rest, GC still runs concurrently
export const SERVE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--v8-pool-size=1'];
