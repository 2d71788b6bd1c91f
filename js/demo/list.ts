/**
 * The shopping list's data and merge rule, as `client/src/list.rs` defines
 * it: per item id the greater `(updatedAt, by, deleted, text)` wins, removals
 * are tombstones, and a list shared read-only ignores the read-only side's
 * items while that side refuses local edits. Pure: no I/O, no DOM.
 */

/** One item (or its tombstone). */
export interface Item {
  /** Random id. */
  id: string;
  /** The text. */
  text: string;
  /** Milliseconds since the epoch of the last change. */
  updatedAt: number;
  /** A tombstone. */
  deleted: boolean;
  /** The writer's replica id. */
  by: string;
}

/** What a sync message says. */
export interface SyncMessage {
  /** Every item, tombstones included. */
  items: Item[];
  /** Set by a side that shared read-only. */
  access?: "read-only" | "read-write";
}

function key(i: Item): [number, string, number, string] {
  return [i.updatedAt, i.by, i.deleted ? 1 : 0, i.text];
}

function greater(a: Item, b: Item): boolean {
  const ka = key(a);
  const kb = key(b);
  for (let i = 0; i < ka.length; i++) {
    if (ka[i]! > kb[i]!) return true;
    if (ka[i]! < kb[i]!) return false;
  }
  return false;
}

/** Merges `incoming` into `items`; returns the merged list and how many items changed. */
export function merge(items: Item[], incoming: Item[]): { items: Item[]; changed: number } {
  const map = new Map(items.map((i) => [i.id, i]));
  let changed = 0;
  for (const item of incoming) {
    if (typeof item?.id !== "string" || typeof item.text !== "string" || typeof item.updatedAt !== "number") continue;
    const mine = map.get(item.id);
    if (!mine || greater(item, mine)) {
      map.set(item.id, { id: item.id, text: item.text, updatedAt: item.updatedAt, deleted: !!item.deleted, by: String(item.by) });
      changed++;
    }
  }
  return { items: [...map.values()], changed };
}

/** The items a person sees (no tombstones), oldest first. */
export function visible(items: Item[]): Item[] {
  return items.filter((i) => !i.deleted).sort((a, b) => a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : 1));
}
