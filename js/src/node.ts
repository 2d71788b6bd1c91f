/**
 * Node-only parts: {@link FileStore}, the profile as `profile.json` in a
 * directory of mode 0700, written atomically (temporary file, fsync, rename,
 * fsync of the directory) with mode 0600. Not for browsers.
 */
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Store } from "./store.js";

/** A profile file in `dir` (created with mode 0700). */
export class FileStore implements Store {
  /** `dir` holds `profile.json`. */
  constructor(readonly dir: string) {}

  /** See {@link Store.load}. */
  async load(): Promise<string | null> {
    try {
      return await readFile(join(this.dir, "profile.json"), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
  }

  /** See {@link Store.save}. */
  async save(text: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = join(this.dir, `profile.json.${process.pid}.tmp`);
    const f = await open(tmp, "w", 0o600);
    try {
      await f.writeFile(text);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, join(this.dir, "profile.json"));
    const d = await open(this.dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
