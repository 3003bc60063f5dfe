export * from '../../src/ops/envoy-process.js';
