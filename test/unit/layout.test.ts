// The folder tree is the map (DESIGN §3): no import cycles in src/, capture/ pure, storage and
// ingest handed their metrics instead of importing ops/, and nothing in src/ imports test code.
// Read from the compiled tree with madge, which follows the same imports Node does.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import madge from 'madge';

const compiledSrc = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');

describe('source layout', function () {
  this.timeout(30_000);
  let graph: Record<string, string[]>;
  let circular: string[][];

  before(async () => {
    const result = await madge(compiledSrc, { fileExtensions: ['js'], includeNpm: true });
    graph = result.obj();
    circular = result.circular();
  });

  const importsOf = (folder: string) =>
    Object.entries(graph)
      .filter(([file]) => file.startsWith(`${folder}/`))
      .flatMap(([file, deps]) => deps.map((dep) => ({ file, dep })));

  it('has no import cycle anywhere in src/', () => {
    expect(Object.keys(graph).length).to.be.above(40);
    expect(circular).to.deep.equal([]);
  });

  it('keeps capture/ pure: it imports only capture/, decompression, UUIDs and JWT decoding', () => {
    const allowed = (dep: string) => dep.startsWith('capture/') || /node_modules\/jose\//.test(dep) || ['zlib', 'crypto'].includes(dep);
    const offending = importsOf('capture').filter(({ dep }) => !allowed(dep));
    expect(offending).to.deep.equal([]);
    expect(importsOf('capture').length).to.be.above(3);
  });

  it('hands storage, ingest, keys and idp their metrics rather than letting them import ops/', () => {
    const offending = ['store', 'ingest', 'keys', 'idp', 'capture'].flatMap(importsOf).filter(({ dep }) => dep.startsWith('ops/') || dep.startsWith('api/'));
    expect(offending).to.deep.equal([]);
  });

  it('never imports test code from src/', () => {
    const offending = Object.entries(graph).flatMap(([file, deps]) => deps.filter((dep) => dep.includes('test/')).map((dep) => ({ file, dep })));
    expect(offending).to.deep.equal([]);
  });
});
