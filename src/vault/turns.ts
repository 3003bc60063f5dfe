// Sealing or opening a whole batch of captures in one synchronous run would hold ext_proc replies
// (buffered mode) behind it for milliseconds. These helpers give the event loop a turn every few
// items, so no run is much longer than one capture's crypto times ITEMS_PER_TURN.
import { setImmediate as nextTurn } from 'node:timers/promises';

export const ITEMS_PER_TURN = 16;

/** `items.map(map)`, yielding to the event loop between slices of `perTurn` items. */
export async function mapInTurns<T, R>(items: readonly T[], map: (item: T) => R, perTurn = ITEMS_PER_TURN): Promise<R[]> {
  const out: R[] = [];
  for (let index = 0; index < items.length; index += 1) {
    if (index > 0 && index % perTurn === 0) await nextTurn();
    out.push(map(items[index]!));
  }
  return out;
}

/** Counts items and yields to the event loop after every `perTurn` of them. */
export class TurnCounter {
  private count = 0;
  constructor(private readonly perTurn = ITEMS_PER_TURN) {}

  async tick(): Promise<void> {
    this.count += 1;
    if (this.count % this.perTurn === 0) await nextTurn();
  }
}
