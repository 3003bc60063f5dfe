import { expect } from 'chai';
import { lazyImport } from '../../src/lib/lazy-import.js';

describe('lib/lazy-import', () => {
  it('loads once on first use and shares the module after', async () => {
    let loads = 0;
    const load = lazyImport(async () => ({ loaded: ++loads }));
    expect(loads).to.equal(0);
    const [first, second] = await Promise.all([load(), load()]);
    expect(first).to.equal(second);
    expect(await load()).to.equal(first);
    expect(loads).to.equal(1);
  });

  it('does not keep a failed import: the next use tries again', async () => {
    let loads = 0;
    const load = lazyImport(async () => {
      loads += 1;
      if (loads === 1) throw new Error('cannot find module');
      return { loaded: loads };
    });
    let failure: Error | undefined;
    await load().catch((error: Error) => (failure = error));
    expect(failure?.message).to.equal('cannot find module');
    expect(await load()).to.deep.equal({ loaded: 2 });
  });
});
