// Property tests: a modest number of runs here; `node dist/scripts/fuzz.js` runs 100,000+ each.
import fc from 'fast-check';
import { properties } from '../support/properties.js';

const numRuns = Number(process.env.TOKEN_TAP_PROPERTY_RUNS ?? 2000);

describe(`properties (${numRuns} runs each)`, function () {
  this.timeout(120_000);
  for (const { name, property } of properties) {
    it(name, () => {
      fc.assert(property, { numRuns });
    });
  }
});
