// Refusals (calls turned away, responses that are no token response) counted per key and
// interval, so a flood of them costs one record per key per interval instead of one record each.
// Pure: no timers and no I/O; the caller ticks it and writes what it hands back.
//
// The first refusal of a key is reported as `first` (write it now, as it is); the ones after it
// are counted, and `due()` hands back each key whose interval has ended with what it counted, to
// be written as one record. The key is then watched for another interval: while refusals keep
// coming, they make one record per interval and no `first`. A key whose interval ended with
// nothing counted is forgotten, so its next refusal is a `first` again.
//
// Memory is bounded: at most `maxKeys` keys are tracked. A refusal of a new key past that is
// counted under `overflow(key)` instead (the key with its unbounded part, say the peer, replaced),
// so the overflow buckets must come from a small set. With `groupOf`, each group (say, an IdP) may
// track at most `maxKeysPerGroup` keys before its new ones go to overflow too, so one group cannot
// use up the keys of the others.

/** Labels that name what a refusal is counted under: peer and outcome, or IdP, outcome and error code. */
export type SummaryKey = Readonly<Record<string, string>>;

export interface RefusalCount<K extends SummaryKey> {
  key: K;
  /** Refusals counted since `since` that had no record of their own. */
  count: number;
  /** Epoch ms: when the interval these were counted in began, and when it was closed. */
  since: number;
  until: number;
}

export interface Noted<K extends SummaryKey> {
  /** The first refusal of its key in an interval: record it now, as it is. */
  first: boolean;
  /** The key it was counted under: the one given, or its overflow bucket. */
  key: K;
  /** Counted under the overflow bucket: `maxKeys` other keys were tracked. */
  overflowed: boolean;
}

export interface RefusalSummaryOptions<K extends SummaryKey> {
  intervalMs: number;
  /** Keys tracked at most (the overflow buckets come on top). */
  maxKeys: number;
  /** Where a refusal of a new key is counted once `maxKeys` keys (or its group's share) are tracked. */
  overflow: (key: K) => K;
  /** The group a key counts against (`maxKeysPerGroup`); its overflow bucket must be in the same group. */
  groupOf?: (key: K) => string;
  /** Keys of one group tracked at most (overflow buckets included); needs `groupOf`. */
  maxKeysPerGroup?: number;
  now?: () => number;
}

interface Entry<K extends SummaryKey> {
  key: K;
  group: string;
  since: number;
  count: number;
}

/** How long one interval lasts by default (TOKEN_TAP_REFUSAL_SUMMARY_MS). */
export const DEFAULT_REFUSAL_SUMMARY_MS = 60_000;

/** Keys tracked by default: far more peers or error codes than a legitimate setup has. */
export const DEFAULT_MAX_SUMMARY_KEYS = 1_000;

export class RefusalSummary<K extends SummaryKey> {
  private readonly entries = new Map<string, Entry<K>>();
  /** Keys tracked per group. */
  private readonly groups = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly options: RefusalSummaryOptions<K>) {
    if (!(options.intervalMs > 0) || !(options.maxKeys > 0)) throw new RangeError('intervalMs and maxKeys must be above 0');
    if (options.maxKeysPerGroup !== undefined && !(options.maxKeysPerGroup > 0 && options.groupOf))
      throw new RangeError('maxKeysPerGroup must be above 0, with groupOf');
    this.now = options.now ?? Date.now;
  }

  /** Keys tracked now, overflow buckets included. */
  get size(): number {
    return this.entries.size;
  }

  get intervalMs(): number {
    return this.options.intervalMs;
  }

  /** Notes one refusal of `key`. */
  note(key: K): Noted<K> {
    const now = this.now();
    let id = idOf(key);
    let overflowed = false;
    if (!this.entries.has(id) && (this.entries.size >= this.options.maxKeys || this.groupFull(key))) {
      key = this.options.overflow(key);
      id = idOf(key);
      overflowed = true;
    }
    const entry = this.entries.get(id);
    if (!entry) {
      const group = this.options.groupOf?.(key) ?? '';
      this.entries.set(id, { key, group, since: now, count: 0 });
      this.groups.set(group, (this.groups.get(group) ?? 0) + 1);
      return { first: true, key, overflowed };
    }
    if (entry.count === 0 && now - entry.since >= this.options.intervalMs) {
      // Its interval ended with nothing counted: a new one begins, with this refusal as its first.
      entry.since = now;
      return { first: true, key: entry.key, overflowed };
    }
    entry.count += 1;
    return { first: false, key: entry.key, overflowed };
  }

  /** The keys whose interval has ended with refusals counted; each starts a new interval. */
  due(): Array<RefusalCount<K>> {
    const now = this.now();
    const ended: Array<RefusalCount<K>> = [];
    for (const [id, entry] of this.entries) {
      if (now - entry.since < this.options.intervalMs) continue;
      if (entry.count === 0) {
        this.entries.delete(id);
        const left = this.groups.get(entry.group)! - 1;
        if (left > 0) this.groups.set(entry.group, left);
        else this.groups.delete(entry.group);
        continue;
      }
      ended.push({ key: entry.key, count: entry.count, since: entry.since, until: now });
      entry.since = now;
      entry.count = 0;
    }
    return ended;
  }

  /** Everything counted, interval ended or not (shutdown); forgets every key. */
  drain(): Array<RefusalCount<K>> {
    const now = this.now();
    const counted = [...this.entries.values()]
      .filter((entry) => entry.count > 0)
      .map((entry) => ({ key: entry.key, count: entry.count, since: entry.since, until: now }));
    this.entries.clear();
    this.groups.clear();
    return counted;
  }

  private groupFull(key: K): boolean {
    const { groupOf, maxKeysPerGroup } = this.options;
    return groupOf !== undefined && maxKeysPerGroup !== undefined && (this.groups.get(groupOf(key)) ?? 0) >= maxKeysPerGroup;
  }
}

/** One string per key, whatever order its labels were written in. */
function idOf(key: SummaryKey): string {
  return JSON.stringify(
    Object.keys(key)
      .sort()
      .map((label) => [label, key[label]]),
  );
}
