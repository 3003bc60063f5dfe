// Long runs of synchronous work (sealing or opening a batch of captures) give the event loop a
// turn every few items: the sidecar has one thread, and a buffered-mode reply or a TokenVault call
// must not wait behind a whole batch.

/** Items between two turns: about a quarter of a millisecond of sealing on a slow core. */
export const ITEMS_PER_TURN = 8;

/** Resolves on the event loop's next turn, after pending I/O callbacks. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** `map` with a turn of the event loop after every `ITEMS_PER_TURN` items. */
export async function mapWithTurns<T, R>(items: readonly T[], map: (item: T) => R): Promise<R[]> {
  const out: R[] = [];
  for (let index = 0; index < items.length; index += 1) {
    if (index > 0 && index % ITEMS_PER_TURN === 0) await nextTurn();
    out.push(map(items[index]!));
  }
  return out;
}
