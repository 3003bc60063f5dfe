// Node flags `token-tap serve` runs with: the Dockerfile's sidecar ENTRYPOINT, bin/token-tap.js run
// as a program (`npx token-tap`: its sh line execs Node with them) and the bench start serve with
// these (test/integration/packaging.test.ts holds the Dockerfile and the bin to them). They cannot
// be set from inside the process: V8 sizes its heap and threads before any code runs.
//   --max-semi-space-size=1  young generation of 2 x 1 MiB instead of up to 2 x 16 MiB: the RSS a
//                            sidecar grows to under load (bench/RESULTS.md), for more frequent
//                            scavenges of a heap that holds little for long. Weighed again against
//                            2 and 4 MiB (2026-12-05, one run each on the shared 2 cores):
//                              semi-space        1 MiB   2 MiB   4 MiB
//                              GC, µs/capture      255     221     154   (--cpu-prof, 1,000/s B+C)
//                              GC, % of thread    21.8    16.8    13.0   (s7-capture: 22-24, 18, 13.5)
//                              RSS at rest, MB    74.7    76.5    79.7   (s7-capture: 73.0, 74.6, 78.9)
//                              peak RSS 1,000/s   B 139-163 / C 173-202 MB at 1 MiB, B 137-174 /
//                                                 C 172-229 MB at 4 MiB: no difference in the noise
//                            Kept at 1: the RSS at rest is paid by every sidecar all the time and
//                            issue 25's ≤ 70 MB is already missed; the GC time is paid only under
//                            load, and the peak is set by promoted ArrayBuffers and malloc's heap
//                            (src/ops/idle-collect.ts), not by the young generation. A sidecar that
//                            runs hot trades ~5 MB for ~100 µs per capture with 4 (in the image's
//                            ENTRYPOINT: NODE_OPTIONS does not override a command-line flag).
//   --v8-pool-size=1         one V8 helper thread instead of one per core (each brings its own
//                            malloc arena): ~3 MB at rest, GC still runs concurrently
export const SERVE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--v8-pool-size=1'];
