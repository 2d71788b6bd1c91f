/** The web demo's list merge rule (demo/list.ts), the same as client/src/list.rs. */
import { strict as assert } from "node:assert";
import { test } from "node:test";
import { Item, merge, visible } from "../demo/list.js";

const item = (id: string, text: string, updatedAt: number, by = "a", deleted = false): Item => ({ id, text, updatedAt, deleted, by });

test("the latest updatedAt wins per item, ties by writer, then deletion, then text", () => {
  const mine = [item("1", "milk", 10), item("2", "eggs", 10, "a")];
  const theirs = [item("1", "oat milk", 11, "b"), item("2", "EGGS", 10, "b"), item("3", "bread", 5, "b")];
  const { items, changed } = merge(mine, theirs);
  assert.equal(changed, 3);
  // "b" > "a" breaks the tie of the eggs; visible() lists oldest first.
  assert.deepEqual(
    visible(items).map((i) => i.text),
    ["bread", "EGGS", "oat milk"],
  );
  // An older version changes nothing; merging is idempotent.
  assert.equal(merge(items, [item("1", "milk", 10)]).changed, 0);
  assert.equal(merge(items, items).changed, 0);
});

test("a removal is a tombstone that wins over an older edit and spreads", () => {
  const removed = merge([item("1", "milk", 10)], [item("1", "milk", 12, "b", true)]).items;
  assert.deepEqual(visible(removed), []);
  assert.equal(removed.length, 1);
  assert.equal(merge(removed, [item("1", "milk", 11, "a")]).changed, 0);
  // At the same time and writer, the deletion wins.
  assert.equal(visible(merge([item("1", "x", 5)], [item("1", "x", 5, "a", true)]).items).length, 0);
});
