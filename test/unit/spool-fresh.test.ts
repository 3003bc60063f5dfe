// The spool's records of this run kept in memory: handed out only when they are exactly the next
// records the reader would read from disk, in order, within one segment, and bounded.
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { FreshRecords, nextRecordAt } from '../../src/ingest/spool-fresh.js';
import type { Segment } from '../../src/ingest/spool-segments.js';

function segment(name: string, size: number, readFrom = 8): Segment {
  return { seq: 0, name, file: name, size, diskBytes: size, readFrom, committed: 8, committedAt: undefined };
}

function group(ids: string[], length = 10): Array<{ capture: Capture; frame: Buffer }> {
  return ids.map((captureId) => ({ capture: { captureId } as Capture, frame: Buffer.alloc(length) }));
}

const ids = (batch: { captures: Capture[] } | undefined) => batch?.captures.map((capture) => capture.captureId);

describe('spool records kept in memory until read (spool-fresh)', () => {
  it('finds the next record as the disk reader walks: past the end of a segment, the next one from where it is read', () => {
    const segments = [segment('a', 48), segment('b', 28, 18)];
    expect(nextRecordAt(segments, { segment: '', offset: 0 })).to.deep.equal({ segment: 'a', offset: 8 });
    expect(nextRecordAt(segments, { segment: 'a', offset: 28 })).to.deep.equal({ segment: 'a', offset: 28 });
    expect(nextRecordAt(segments, { segment: 'a', offset: 48 })).to.deep.equal({ segment: 'b', offset: 18 });
    expect(nextRecordAt(segments, { segment: 'b', offset: 28 })).to.equal(undefined);
  });

  it('hands out records in order, at most the number asked, with the positions a disk read would give', () => {
    const fresh = new FreshRecords();
    fresh.add('a', 8, group(['1', '2', '3']));
    const segments = [segment('a', 38)];
    const first = fresh.take(segments, { segment: '', offset: 0 }, 2)!;
    expect(ids(first)).to.deep.equal(['1', '2']);
    expect(first.records).to.equal(2);
    expect(first.start).to.deep.equal({ segment: 'a', offset: 8 });
    expect(first.end).to.deep.equal({ segment: 'a', offset: 28 });
    const second = fresh.take(segments, first.end, 10)!;
    expect(ids(second)).to.deep.equal(['3']);
    expect(second.end).to.deep.equal({ segment: 'a', offset: 38 });
    expect(fresh.take(segments, second.end, 10)).to.equal(undefined);
    expect(fresh.size).to.equal(0);
  });

  it('goes on into the next segment, from where the disk reader would start it', () => {
    const fresh = new FreshRecords();
    fresh.add('a', 8, group(['1']));
    fresh.add('b', 8, group(['2', '3']));
    const segments = [segment('a', 18), segment('b', 28)];
    const batch = fresh.take(segments, { segment: '', offset: 0 }, 10)!;
    expect(ids(batch)).to.deep.equal(['1', '2', '3']);
    expect(batch.end).to.deep.equal({ segment: 'b', offset: 28 });
  });

  it('stops at a record that is not the next one on disk (a gap: a record kept only on disk)', () => {
    const fresh = new FreshRecords();
    fresh.add('a', 8, group(['1']));
    fresh.add('a', 28, group(['3']));
    const segments = [segment('a', 38)];
    const batch = fresh.take(segments, { segment: '', offset: 0 }, 10)!;
    expect(ids(batch)).to.deep.equal(['1']);
    expect(fresh.take(segments, batch.end, 10), 'record 2 (offset 18) is read from disk first').to.equal(undefined);
  });

  it('holds at most its byte bound of frames, whatever the count (captures at their field bounds through an outage)', () => {
    const fresh = new FreshRecords(1_000, 8 * 1024 * 1024);
    const big = Buffer.alloc(200_000);
    for (let index = 0; index < 1_000; index += 1) fresh.add('a', 8 + index * big.length, [{ capture: { captureId: String(index) } as Capture, frame: big }]);
    expect(fresh.size * big.length).to.be.at.most(8 * 1024 * 1024);
    expect(fresh.size).to.equal(Math.floor((8 * 1024 * 1024) / big.length));
    expect(fresh.bytes).to.equal(fresh.size * big.length);
    const batch = fresh.take([segment('a', 8 + 1_000 * big.length)], { segment: '', offset: 0 }, 10)!;
    expect(batch.records).to.equal(10);
    expect(fresh.bytes, 'taken records no longer count').to.equal(fresh.size * big.length);
  });

  it('past its bound keeps nothing more: the reader reads those from disk, then takes the ones after from memory again', () => {
    const fresh = new FreshRecords(2);
    fresh.add('a', 8, group(['1', '2', '3']));
    const segments = [segment('a', 58)];
    const first = fresh.take(segments, { segment: '', offset: 0 }, 10)!;
    expect(ids(first), 'the third was not kept').to.deep.equal(['1', '2']);
    // Record 3 is on disk only: nothing here for the reader at offset 28.
    expect(fresh.take(segments, first.end, 10)).to.equal(undefined);
    fresh.add('a', 38, group(['4', '5']));
    expect(fresh.take(segments, first.end, 10), 'not the next record: 3 comes first, from disk').to.equal(undefined);
    // The disk reader took 3 (to offset 38): 4 and 5 come from memory.
    expect(ids(fresh.take(segments, { segment: 'a', offset: 38 }, 10))).to.deep.equal(['4', '5']);
  });

  it('drops records the reader has gone past (read from disk) and never hands them out again', () => {
    const fresh = new FreshRecords();
    fresh.add('a', 8, group(['1', '2', '3']));
    const segments = [segment('a', 38)];
    expect(ids(fresh.take(segments, { segment: 'a', offset: 28 }, 10))).to.deep.equal(['3']);
    expect(fresh.size).to.equal(0);
  });
});
