/**
 * Where a client keeps its profile (keys, peers, cursors, seen ids): one
 * JSON text behind a small interface. {@link MemoryStore} for tests and
 * {@link IndexedDbStore} for browsers live here; the Node file store is in
 * `node.ts` (it needs `node:fs`). A store does not interpret the text.
 */

/** Keeps one profile text. */
export interface Store {
  /** The saved text, or null when nothing was saved yet. */
  load(): Promise<string | null>;
  /** Replaces the saved text (atomically where the medium allows). */
  save(text: string): Promise<void>;
}

/** A store in memory (lost with the process). */
export class MemoryStore implements Store {
  private text: string | null = null;
  /** See {@link Store.load}. */
  async load(): Promise<string | null> {
    return this.text;
  }
  /** See {@link Store.save}. */
  async save(text: string): Promise<void> {
    this.text = text;
  }
}

/** A store in the browser's IndexedDB: database `name`, one record. */
export class IndexedDbStore implements Store {
  /** `name` is the database name (default `connectoid`). */
  constructor(readonly name = "connectoid") {}

  private db(): Promise<IDBDatabase> {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("profile");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  /** See {@link Store.load}. */
  async load(): Promise<string | null> {
    const db = await this.db();
    try {
      return await new Promise((resolve, reject) => {
        const req = db.transaction("profile").objectStore("profile").get("profile");
        req.onsuccess = () => resolve((req.result as string | undefined) ?? null);
        req.onerror = () => reject(req.error);
      });
    } finally {
      db.close();
    }
  }

  /** See {@link Store.save}: one readwrite transaction, so all or nothing. */
  async save(text: string): Promise<void> {
    const db = await this.db();
    try {
      await new Promise<void>((resolve, reject) => {
        const tx = db.transaction("profile", "readwrite");
        tx.objectStore("profile").put(text, "profile");
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }
}
