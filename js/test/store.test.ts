/** The Node file store: atomic replacement, file mode 0600, directory 0700. */
import { strict as assert } from "node:assert";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { FileStore } from "../src/node.js";
import { cleanup, tempDir } from "./procs.js";

after(cleanup);

test("a profile file is written atomically with mode 0600", async () => {
  const dir = join(tempDir(), "profile");
  const store = new FileStore(dir);
  assert.equal(await store.load(), null);
  await store.save('{"a":1}');
  await store.save('{"a":2}');
  assert.equal(await store.load(), '{"a":2}');
  assert.equal(statSync(join(dir, "profile.json")).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.deepEqual(readdirSync(dir), ["profile.json"]);
});
