/**
 * The device's durable state in one IndexedDB database (through `idb`): the outbox,
 * the last pulled view of each entity, the cursor, the replica's counter and last HLC
 * stamp, rejected changes, the last token (for the service worker), and the entities the
 * server named `unavailable` (meta `unavailable`, kept with the page that named them).
 *
 * Durability: every write is one `readwrite` transaction with `durability: "strict"`
 * (where supported: the browser flushes to disk before `complete`), and a write
 * resolves only on `complete`. The counter and HLC are read and written in the same
 * transaction as the outbox row, so a crash keeps both or neither: a number is never
 * used twice (PROTOCOL §1) and a resolved write is on disk. Several tabs share the
 * database; IndexedDB serialises their `readwrite` transactions on these stores.
 *
 * An outbox row lives until the server's state covers it: acknowledged rows stay for
 * optimistic reads until a pull brings an entity vv that includes them, so a read never
 * flickers back to the old value between the push and the pull.
 *
 * A reset (PROTOCOL §4.4 `reset`) does not wipe the synced state at once: it bumps the
 * `epoch` (meta) and clears the cursor in one transaction, and marks the reset in progress
 * (meta `stale`). The old views stay (reads show them, and local writes take their version
 * vectors as context) while the pull from the start rewrites each view it brings at the
 * new epoch (every stored view carries the epoch that wrote it, indexed); when that pull
 * ends with `more: false` (`dropStale`), the views of older epochs, which the server no
 * longer has for this replica, are dropped in bounded batches, and with them the entities
 * named `unavailable` before the reset and not named again. An interrupted reset resumes
 * from the stored mid-pull cursor (after a reload too) and ends the same way. The outbox
 * is never touched. Attachment statuses live in the views and go with them.
 */
import { openDB, type DBSchema, type IDBPDatabase, type IDBPTransaction, type StoreNames } from "idb";

import { observe } from "./clock.js";
import { ProtocolViolation } from "./errors.js";
import type { SyncEvent } from "./events.js";
import { asAttachmentRef, type AttachmentRef, type RemoteStatus, type UploadState } from "./attachments-ref.js";
import { mergeDelta } from "./optimistic.js";
import type { Change, EntityView, Eviction, FieldView, Hlc, PushResult, Unavailable } from "./types.js";

/** 1: the first layout; 2: stores `uploads` and `blob_cache`; 3: an `epoch` on every view, indexed (a reset keeps old views until the pull from the start ends). */
export const DB_VERSION = 3;
/** Meta key: set with the renumbering that found the server behind, cleared by the `reset` it calls for. */
const SERVER_BEHIND = "server_behind";
/** Meta key: the reset generation (a number, 0 before the first reset); views and unavailable entities carry the one that wrote them. */
const EPOCH = "epoch";
/** Meta key: set by a reset, cleared when the pull from the start has ended and the older views are dropped. */
const STALE = "stale";
/** Views of an older epoch dropped (and reported) per transaction when the pull after a reset ends. */
export const STALE_CHUNK = 500;

export interface OutboxRow {
  /** local write order, stable when `n` is renumbered */
  seq: number;
  n: number;
  id: string;
  collection: string;
  entity: string;
  size: number;
  change: Change;
  /** 1 once the server answered applied or duplicate */
  acked: 0 | 1;
}

export type Rejection = Extract<SyncEvent, { type: "rejected" }>;

/** One attached file: its reference, where it goes, and its upload (version 2 of the database). */
export interface UploadRow {
  id: string;
  ref: AttachmentRef;
  collection: string;
  entity: string;
  field: string;
  /** the bytes until the server has them all (then they move to the cache), or until a refused file is discarded */
  blob: Blob | null;
  state: UploadState;
  /** bytes the server has acknowledged */
  sent: number;
  /** the tus upload URL once created, to resume from its `HEAD` after any interruption */
  uploadUrl: string | null;
  code: string | null;
  message: string | null;
  /** when it was attached (ms) */
  queuedAt: number;
  /** queue order: the counter ``n`` of the change that attached it, so two attaches in one millisecond keep their order */
  seq: number;
}

/** An upload as a write queues it; the store numbers it (``seq``) in the write's transaction. */
export type NewUpload = Omit<UploadRow, "seq">;

/** A downloaded (or uploaded) file kept for reads, evicted least recently used first. */
export interface CachedBlob {
  id: string;
  blob: Blob;
  size: number;
  usedAt: number;
}

/** A view as stored: with the reset generation that wrote it (never shown to readers). */
type StoredView = EntityView & { epoch: number };
/** An unavailable entity as stored in meta `unavailable`: with the epoch of the page that named it (absent before version 3: 0). */
type StoredUnavailable = Unavailable & { epoch?: number };

interface SyncDB extends DBSchema {
  meta: { key: string; value: unknown };
  outbox: { key: number; value: OutboxRow; indexes: { entity: [string, string, number]; pending: [number, number] } };
  entities: { key: [string, string]; value: StoredView; indexes: { collection: string; epoch: number } };
  rejections: { key: string; value: Rejection };
  uploads: { key: string; value: UploadRow };
  blob_cache: { key: string; value: CachedBlob; indexes: { usedAt: number } };
}

type Stores = StoreNames<SyncDB>[];
type Tx = IDBPTransaction<SyncDB, Stores, "readwrite">;

const STRICT: IDBTransactionOptions = { durability: "strict" };

export interface PushOutcome {
  applied: number;
  duplicates: number;
  rejected: Rejection[];
  renumbered: number;
  /** The server lacks changes it had acknowledged (restored from a backup): our cursor is not to be trusted. */
  serverBehind: boolean;
  lastN: number;
}

/** What a write sees while it builds its change, inside the transaction that stores it. */
export interface WriteContext {
  stored: EntityView | undefined;
  outbox: OutboxRow[];
  counter: number;
  hlc: Hlc;
}

export class LocalStore {
  private constructor(
    readonly db: IDBPDatabase<SyncDB>,
    readonly replica: string,
  ) {}

  /** Open (or create) the database; the replica id is generated once and kept. */
  static async open(dbName: string, replicaId?: string): Promise<LocalStore> {
    const db = await openDB<SyncDB>(dbName, DB_VERSION, {
      upgrade(d, oldVersion, _newVersion, upgrade) {
        // Every step keeps what an older version stored.
        if (oldVersion < 1) {
          d.createObjectStore("meta");
          const outbox = d.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
          outbox.createIndex("entity", ["collection", "entity", "n"]);
          outbox.createIndex("pending", ["acked", "n"]);
          const entities = d.createObjectStore("entities", { keyPath: ["collection", "entity"] });
          entities.createIndex("collection", "collection");
          d.createObjectStore("rejections", { keyPath: "id" });
        }
        if (oldVersion < 2) {
          d.createObjectStore("uploads", { keyPath: "id" });
          d.createObjectStore("blob_cache", { keyPath: "id" }).createIndex("usedAt", "usedAt");
        }
        if (oldVersion < 3) {
          const entities = upgrade.objectStore("entities");
          entities.createIndex("epoch", "epoch");
          // Views stored before had no epoch, so the index would miss them: they are of epoch 0. The upgrade
          // transaction stays open while this walks them (each step waits only on its own requests); a
          // failure aborts it, and the open fails with the database left at the version before.
          if (oldVersion >= 1) {
            void (async () => {
              for (let c = await entities.openCursor(); c; c = await c.continue()) {
                if (typeof c.value.epoch !== "number") await c.update({ ...c.value, epoch: 0 });
              }
            })().catch(() => {
              try {
                upgrade.abort();
              } catch {
                // already aborted
              }
            });
          }
        }
      },
      blocking() {
        // A newer version of the app (another tab, or the service worker after an update) wants to upgrade the
        // database: this connection must not hold it up for as long as this page stays open. Closed, this
        // (older) page's next write fails with an error instead, and its outbox stays on disk for the new one.
        db.close();
      },
    });
    const tx = db.transaction("meta", "readwrite", STRICT);
    const owner = (await tx.store.get("replica")) as string | undefined;
    let replica = owner;
    if (owner === undefined) {
      replica = replicaId ?? `web-${crypto.randomUUID()}`;
      await tx.store.put(replica, "replica");
    }
    await tx.done;
    if (replicaId !== undefined && owner !== undefined && owner !== replicaId) {
      db.close();
      throw new Error(`IndexedDB ${dbName} belongs to replica ${owner}, not ${replicaId}`);
    }
    return new LocalStore(db, replica as string);
  }

  close(): void {
    this.db.close();
  }

  private tx(stores: Stores): Tx {
    return this.db.transaction(stores, "readwrite", STRICT);
  }

  // --- meta ------------------------------------------------------------------

  async meta<T>(key: string): Promise<T | undefined> {
    return (await this.db.get("meta", key)) as T | undefined;
  }

  async setMeta(key: string, value: unknown): Promise<void> {
    const tx = this.tx(["meta"]);
    await tx.objectStore("meta").put(value, key);
    await tx.done;
  }

  async counter(): Promise<number> {
    return (await this.meta<number>("counter")) ?? 0;
  }

  async cursor(): Promise<string | null> {
    return (await this.meta<string | null>("cursor")) ?? null;
  }

  // --- writes ----------------------------------------------------------------

  /**
   * Number a change with the next counter and commit it with the counter and HLC.
   * `build` runs inside the transaction and must be synchronous (IndexedDB commits a
   * transaction that waits on anything else); it may throw to abort the write.
   */
  async enqueue(
    collection: string,
    entity: string,
    build: (ctx: WriteContext) => Change,
    { withOutbox = true, upload }: { withOutbox?: boolean; upload?: NewUpload } = {},
  ): Promise<Change> {
    // An attachment's bytes commit with the change that references them: both or neither.
    const tx = this.tx(upload ? ["meta", "outbox", "entities", "uploads"] : ["meta", "outbox", "entities"]);
    const meta = tx.objectStore("meta");
    const [counter, hlc, stored, outbox] = await Promise.all([
      meta.get("counter") as Promise<number | undefined>,
      meta.get("hlc") as Promise<Hlc | undefined>,
      tx.objectStore("entities").get([collection, entity]),
      // Only an edit made on the optimistic state (text) needs the entity's pending changes.
      withOutbox ? tx.objectStore("outbox").index("entity").getAll(entityRange(collection, entity)) : [],
    ]);
    let change: Change;
    try {
      change = build({ stored: bare(stored), outbox, counter: counter ?? 0, hlc: hlc ?? [0, 0] });
    } catch (exc) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw exc;
    }
    const size = new TextEncoder().encode(JSON.stringify(change)).length;
    await Promise.all([
      tx.objectStore("outbox").add({
        n: change.n,
        id: change.id,
        collection,
        entity,
        size,
        change,
        acked: 0,
      } as OutboxRow),
      meta.put(change.n, "counter"),
      meta.put(change.hlc, "hlc"),
      upload ? tx.objectStore("uploads").add({ ...upload, seq: change.n }) : undefined,
    ]);
    await tx.done;
    return change;
  }

  // --- reads -----------------------------------------------------------------

  async view(collection: string, entity: string): Promise<EntityView | undefined> {
    return bare(await this.db.get("entities", [collection, entity]));
  }

  async views(collection: string): Promise<EntityView[]> {
    return (await this.db.getAllFromIndex("entities", "collection", collection)).map((v) => bare(v) as EntityView);
  }

  /** Outbox rows (pending and acked) of one entity or a whole collection, in counter order. */
  async outbox(collection: string, entity?: string): Promise<OutboxRow[]> {
    if (entity !== undefined) return this.db.getAllFromIndex("outbox", "entity", entityRange(collection, entity));
    const rows = await this.db.getAllFromIndex(
      "outbox",
      "entity",
      IDBKeyRange.bound([collection, "", 0], [collection, [], Infinity]),
    );
    return rows.sort((a, b) => a.n - b.n || a.seq - b.seq);
  }

  /** The next changes to push, in counter order: at most `limit` rows and `maxBytes` (at least one row). */
  async pending(limit: number, maxBytes: number, upToN: number): Promise<OutboxRow[]> {
    if (upToN < 1) return [];
    const rows = await this.db.getAllFromIndex("outbox", "pending", IDBKeyRange.bound([0, 1], [0, upToN]), limit);
    const out: OutboxRow[] = [];
    let total = 0;
    for (const row of rows) {
      if (out.length && total + row.size > maxBytes) break;
      total += row.size;
      out.push(row);
    }
    return out;
  }

  async pendingCount(): Promise<number> {
    return this.db.countFromIndex("outbox", "pending", IDBKeyRange.bound([0, 1], [0, Infinity]));
  }

  async maxAckedSeq(): Promise<number> {
    const rows = await this.db.getAllFromIndex("outbox", "pending", IDBKeyRange.bound([1, 0], [1, Infinity]));
    return rows.reduce((m, r) => Math.max(m, r.seq), 0);
  }

  async rejections(): Promise<Rejection[]> {
    return this.db.getAll("rejections");
  }

  async clearRejections(ids?: string[]): Promise<void> {
    const tx = this.tx(["rejections"]);
    const store = tx.objectStore("rejections");
    await (ids === undefined ? store.clear() : Promise.all(ids.map((i) => store.delete(i))));
    await tx.done;
  }

  // --- push results ----------------------------------------------------------

  /** Apply one push response to the outbox atomically (PROTOCOL §4.2, client actions). */
  async recordResults(rows: OutboxRow[], results: PushResult[]): Promise<PushOutcome> {
    if (rows.length !== results.length) {
      throw new ProtocolViolation(`pushed ${rows.length} changes but got ${results.length} results`);
    }
    const out: PushOutcome = { applied: 0, duplicates: 0, rejected: [], renumbered: 0, serverBehind: false, lastN: 0 };
    const tx = this.tx(["meta", "outbox", "rejections"]);
    const outbox = tx.objectStore("outbox");
    const reused: number[] = [];
    let expected: number | null = null;
    try {
      for (const [i, row] of rows.entries()) {
        const result = results[i] as PushResult;
        if (result.id !== row.change.id || result.n !== row.n) {
          throw new ProtocolViolation(`result ${result.id}/${result.n} does not match change ${row.change.id}`);
        }
        switch (result.status) {
          case "applied":
          case "duplicate":
            await outbox.put({ ...row, acked: 1 });
            if (result.status === "applied") out.applied++;
            else out.duplicates++;
            break;
          case "rejected":
            if (result.error.code === "n_reused") reused.push(row.n);
            else out.rejected.push(await this.reject(tx, row, result.error.code, result.error.message));
            break;
          case "out_of_order":
            expected = expected === null ? result.expected : Math.min(expected, result.expected);
        }
      }
      const counter = ((await tx.objectStore("meta").get("counter")) as number | undefined) ?? 0;
      if (reused.length) {
        // Our counter was lost (restored from a backup): fresh numbers for everything from there on.
        out.renumbered = await renumber(tx, Math.min(...reused), counter + 1);
      } else if (expected !== null && !(await hasPending(tx, expected))) {
        // The server lacks counters we no longer hold: it has processed none from `expected` on,
        // so our pending changes can take those numbers.
        out.renumbered = await renumber(tx, expected, expected);
        out.serverBehind = true;
        // Kept with the renumbering: whoever runs the next round (this tab, another, after a crash, or the
        // page after the service worker pushed) drops the cursor, which may point past the server's log.
        await tx.objectStore("meta").put(true, SERVER_BEHIND);
      }
      out.lastN = ((await tx.objectStore("meta").get("counter")) as number | undefined) ?? 0;
    } catch (exc) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw exc;
    }
    await tx.done;
    return out;
  }

  /**
   * Drop a change the server can never take (larger than any push body). The server never saw its counter,
   * so the pending changes after it move down by one in the same transaction (n+1, n+2, ... become n, n+1,
   * ...) and the counter with them: otherwise the next push would leave a gap, which the server answers
   * `out_of_order` and we would take for a server that lost acknowledged changes (a needless reset).
   */
  async rejectLocally(row: OutboxRow, code: string, message: string): Promise<{ rejection: Rejection; renumbered: number }> {
    const tx = this.tx(["meta", "outbox", "rejections"]);
    let rejection: Rejection;
    let renumbered: number;
    try {
      rejection = await this.reject(tx, row, code, message);
      renumbered = await renumber(tx, row.n + 1, row.n);
      // `renumber` leaves the counter alone when nothing moved: the dropped change was the last one.
      await tx.objectStore("meta").put(row.n - 1 + renumbered, "counter");
    } catch (exc) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw exc;
    }
    await tx.done;
    return { rejection, renumbered };
  }

  private async reject(tx: Tx, row: OutboxRow, code: string, message: string): Promise<Rejection> {
    const c = row.change;
    const rejection: Rejection = {
      type: "rejected",
      id: c.id,
      n: row.n,
      collection: c.collection,
      entity: c.entity,
      code,
      message,
      change: c,
    };
    await tx.objectStore("outbox").delete(row.seq);
    await tx.objectStore("rejections").put(rejection);
    return rejection;
  }

  // --- attachments -------------------------------------------------------------

  /** The server's status of `id` as last heard, from a stored view that references it. */
  async remoteStatus(id: string): Promise<RemoteStatus | undefined> {
    for (const view of await this.db.getAll("entities")) {
      const status = view.attachments?.[id];
      if (status !== undefined) return status;
    }
    return undefined;
  }

  /**
   * Ids some stored view holds as `pending`, or references without a status (a live frame may omit them,
   * PROTOCOL §10.2), sorted.
   */
  async pendingAttachments(): Promise<string[]> {
    const ids = new Set<string>();
    for (const view of await this.db.getAll("entities")) {
      for (const [id, status] of Object.entries(view.attachments ?? {})) if (status === "pending") ids.add(id);
      for (const id of referenced(view)) if (view.attachments?.[id] === undefined) ids.add(id);
    }
    return [...ids].sort();
  }

  /**
   * Store what a status refresh heard: each id of `heard` takes its status in every view that holds it as
   * `pending` or references it without a status (a status never goes back, so an older answer cannot undo a
   * newer pull); each id of `gone` (the server no longer shows it to this token) is dropped from those views.
   * Returns the changes, one per id (`previous` null for a reference that had no status).
   */
  async setRemoteStatuses(
    heard: Record<string, RemoteStatus>,
    gone: string[],
  ): Promise<{ id: string; status: RemoteStatus; previous: RemoteStatus | null }[]> {
    const drop = new Set(gone);
    const changed = new Map<string, { id: string; status: RemoteStatus; previous: RemoteStatus | null }>();
    const tx = this.tx(["entities"]);
    const entities = tx.objectStore("entities");
    for (const view of await entities.getAll()) {
      const statuses: Record<string, RemoteStatus> = { ...view.attachments };
      for (const id of referenced(view)) if (statuses[id] === undefined && Object.hasOwn(heard, id)) statuses[id] = "pending";
      let touched = false;
      for (const [id, before] of Object.entries(statuses)) {
        if (before !== "pending") continue;
        const now = Object.hasOwn(heard, id) ? heard[id] : undefined;
        const previous = view.attachments?.[id] ?? null;
        if (now !== undefined && now !== previous) {
          statuses[id] = now;
          changed.set(id, { id, status: now, previous });
          touched = true;
        } else if (drop.has(id) && previous !== null) {
          delete statuses[id];
          touched = true;
        }
      }
      if (touched) await entities.put({ ...view, attachments: statuses });
    }
    await tx.done;
    return [...changed.values()];
  }

  async upload(id: string): Promise<UploadRow | undefined> {
    return this.db.get("uploads", id);
  }

  /** Every attachment this device attached, in the order they were queued. */
  async uploads(): Promise<UploadRow[]> {
    return (await this.db.getAll("uploads")).sort((a, b) => a.seq - b.seq);
  }

  /** Update an upload's progress or state (its bytes stay). */
  async updateUpload(id: string, patch: Partial<Pick<UploadRow, "state" | "sent" | "uploadUrl" | "code" | "message">>) {
    const tx = this.tx(["uploads"]);
    const row = await tx.objectStore("uploads").get(id);
    if (row) await tx.objectStore("uploads").put({ ...row, ...patch });
    await tx.done;
    return row ? { ...row, ...patch } : undefined;
  }

  /** The server has every byte: the copy moves to the read cache, in one transaction, then the cache is trimmed. */
  async uploaded(id: string, cacheBytes: number): Promise<void> {
    const tx = this.tx(["uploads", "blob_cache"]);
    const row = await tx.objectStore("uploads").get(id);
    if (row) {
      if (row.blob) await tx.objectStore("blob_cache").put({ id, blob: row.blob, size: row.blob.size, usedAt: Date.now() });
      // What status reporting needs stays; the bytes (now in the bounded cache) and the tus URL go.
      const done: UploadRow = { ...row, blob: null, state: "uploaded", sent: row.ref.size, uploadUrl: null, code: null, message: null };
      await tx.objectStore("uploads").put(done);
    }
    await tx.done;
    await this.trimCache(cacheBytes, id);
  }

  /**
   * Forget a file that is done with, refused or uploaded: its row and, for a refused one, its bytes (an
   * uploaded one's copy is in the read cache, which evicts it in its turn). A file still to be uploaded stays:
   * the reference synced with its change would point at bytes the server never gets. Returns what was there.
   */
  async discardUpload(id: string): Promise<UploadRow | undefined> {
    const tx = this.tx(["uploads"]);
    const row = await tx.objectStore("uploads").get(id);
    if (row && (row.state === "queued" || row.state === "uploading")) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw new Error(`attachment ${id} is ${row.state}: only a refused or uploaded file can be discarded`);
    }
    if (row) await tx.objectStore("uploads").delete(id);
    await tx.done;
    return row;
  }

  /** A cached copy, marked as just used. */
  async cachedBlob(id: string): Promise<Blob | undefined> {
    const tx = this.tx(["blob_cache"]);
    const hit = await tx.objectStore("blob_cache").get(id);
    if (hit) await tx.objectStore("blob_cache").put({ ...hit, usedAt: Date.now() });
    await tx.done;
    return hit?.blob;
  }

  async cacheBlob(id: string, blob: Blob, cacheBytes: number): Promise<void> {
    const tx = this.tx(["blob_cache"]);
    await tx.objectStore("blob_cache").put({ id, blob, size: blob.size, usedAt: Date.now() });
    await tx.done;
    await this.trimCache(cacheBytes, id);
  }

  /** Evict least recently used copies until the cache holds at most `cacheBytes` (`keep` stays). */
  async trimCache(cacheBytes: number, keep?: string): Promise<number> {
    const tx = this.tx(["blob_cache"]);
    const index = tx.objectStore("blob_cache").index("usedAt");
    const all = await index.getAll();
    let total = all.reduce((sum, c) => sum + c.size, 0);
    for (const c of all) {
      if (total <= cacheBytes) break;
      if (c.id === keep) continue;
      await tx.objectStore("blob_cache").delete(c.id);
      total -= c.size;
    }
    await tx.done;
    return total;
  }

  // --- pull ------------------------------------------------------------------

  /**
   * Merge one pulled page and store its cursor in the same transaction; returns the events it implies.
   * Entities the page names `unavailable` keep what the device holds and join the set that
   * `unavailable()` lists (an `unavailable` event when first named). An eviction drops the entity at
   * once (also in the pull after a reset) and takes it out of the set; if the device showed it (held and
   * not deleted), a `remote_change` with `fields: []` and `deleted: true` tells the app.
   *
   * After a reset, a view kept from before it (an older epoch) is replaced, not merged: the pull from the
   * start carries every field. A `remote_change` tells the app only if what it showed changed.
   */
  async applyPage(
    changes: EntityView[],
    evictions: Eviction[],
    cursor: string | null,
    unavailable: Unavailable[] = [],
  ): Promise<SyncEvent[]> {
    const events: SyncEvent[] = [];
    const tx = this.tx(["meta", "outbox", "entities"]);
    const entities = tx.objectStore("entities");
    const meta = tx.objectStore("meta");
    let hlc = ((await meta.get("hlc")) as Hlc | undefined) ?? [0, 0];
    const epoch = await epochOf(tx);
    for (const delta of changes) {
      const stored = await entities.get([delta.collection, delta.entity]);
      const old = bare(stored);
      let merged: EntityView;
      if (stored !== undefined && old !== undefined && stored.epoch < epoch) {
        // Kept from before a reset: the server's whole state replaces it.
        merged = mergeDelta(undefined, delta);
        const found = eventsFor(old, merged, this.replica);
        if (!found.some((e) => e.type === "remote_change") && differs(old, merged)) {
          const fields = Object.keys(merged.fields).sort();
          found.unshift({ type: "remote_change", collection: merged.collection, entity: merged.entity, fields, deleted: merged.deleted });
        }
        events.push(...found);
      } else {
        merged = mergeDelta(old, delta);
        events.push(...eventsFor(old, delta, this.replica));
      }
      await entities.put({ ...merged, epoch });
      await dropCovered(tx, merged, this.replica);
      hlc = observeSiblings(hlc, delta);
    }
    for (const gone of evictions) {
      const key: [string, string] = [gone.collection, gone.entity];
      const held = await entities.get(key);
      if (held === undefined) continue;
      await entities.delete(key);
      // It left this replica's scope: to the app it is gone, like a delete.
      if (!held.deleted) events.push({ type: "remote_change", collection: gone.collection, entity: gone.entity, fields: [], deleted: true });
    }
    const set = await unavailableSet(tx);
    if (unavailable.length || (evictions.length && set.size)) {
      for (const gone of evictions) set.delete(unavailableKey(gone));
      for (const u of unavailable) {
        if (!set.has(unavailableKey(u))) events.push({ type: "unavailable", collection: u.collection, entity: u.entity, code: u.code });
        set.set(unavailableKey(u), { collection: u.collection, entity: u.entity, seq: u.seq, code: u.code, epoch });
        // What the device holds of it stays, also through the end of a reset's pull.
        const held = await entities.get([u.collection, u.entity]);
        if (held !== undefined && held.epoch !== epoch) await entities.put({ ...held, epoch });
      }
      await meta.put([...set.values()], "unavailable");
    }
    await meta.put(hlc, "hlc");
    await meta.put(cursor, "cursor");
    await tx.done;
    return events;
  }

  /** The entities the server named `unavailable`, not yet read back, by collection and entity. */
  async unavailable(): Promise<Unavailable[]> {
    const stored = (await this.meta<StoredUnavailable[]>("unavailable")) ?? [];
    const set = stored.map(({ collection, entity, seq, code }): Unavailable => ({ collection, entity, seq, code }));
    return set.sort((a, b) => (unavailableKey(a) < unavailableKey(b) ? -1 : unavailableKey(a) > unavailableKey(b) ? 1 : 0));
  }

  /**
   * An unavailable entity read back: `view` (the server's whole state) replaces what the device
   * holds, `undefined` (404: gone or out of scope) drops it; either way it leaves the set. Does
   * nothing if it left the set meanwhile (the end of a `reset`'s pull, an eviction). Returns the events it implies:
   * always a `remote_change` (the app's mark can go), plus `conflict`s the view shows.
   */
  async resolveUnavailable(item: Unavailable, view: EntityView | undefined): Promise<SyncEvent[]> {
    const tx = this.tx(["meta", "outbox", "entities"]);
    const set = await unavailableSet(tx);
    const key: [string, string] = [item.collection, item.entity];
    if (!set.delete(unavailableKey(item))) {
      await tx.done;
      return [];
    }
    const entities = tx.objectStore("entities");
    const old = bare(await entities.get(key));
    let events: SyncEvent[];
    if (view === undefined) {
      await entities.delete(key);
      events = [{ type: "remote_change", collection: item.collection, entity: item.entity, fields: [], deleted: true }];
    } else {
      // The whole state, as a pull from `cursor: null` would send it: replaced, not merged.
      const whole: EntityView = { ...view, collection: item.collection, entity: item.entity };
      await entities.put({ ...whole, epoch: await epochOf(tx) });
      await dropCovered(tx, whole, this.replica);
      const meta = tx.objectStore("meta");
      await meta.put(observeSiblings(((await meta.get("hlc")) as Hlc | undefined) ?? [0, 0], whole), "hlc");
      events = eventsFor(old, whole, this.replica);
      if (!events.some((e) => e.type === "remote_change")) {
        const fields = Object.keys(whole.fields).sort();
        events.unshift({ type: "remote_change", collection: item.collection, entity: item.entity, fields, deleted: whole.deleted });
      }
    }
    await tx.objectStore("meta").put([...set.values()], "unavailable");
    await tx.done;
    return events;
  }

  /** After a complete pull: acked rows written before it began are in the pulled state. */
  async dropAcked(upToSeq: number): Promise<void> {
    const tx = this.tx(["outbox"]);
    const outbox = tx.objectStore("outbox");
    const rows = await outbox.index("pending").getAll(IDBKeyRange.bound([1, 0], [1, Infinity]));
    await Promise.all(rows.filter((r) => r.seq <= upToSeq).map((r) => outbox.delete(r.seq)));
    await tx.done;
  }

  /**
   * Start over from `cursor: null` (PROTOCOL §4.4 `reset`); never touches the outbox. The synced state
   * (views with their attachment statuses, unavailable entities) stays readable and serves as the context
   * of local writes until the pull from the start ends (`dropStale`): a device that goes offline meanwhile
   * keeps what it had.
   */
  async reset(): Promise<void> {
    const tx = this.tx(["meta"]);
    const meta = tx.objectStore("meta");
    await meta.put(await epochOf(tx) + 1, EPOCH);
    await meta.put(true, STALE);
    await meta.put(null, "cursor");
    await meta.delete(SERVER_BEHIND);
    await tx.done;
  }

  /** A reset happened and the pull from the start has not ended yet: views from before it are still shown. */
  async resetting(): Promise<boolean> {
    return (await this.meta<boolean>(STALE)) === true;
  }

  /**
   * After a pull ended with `more: false`: drop up to `limit` views a reset left behind, in one transaction.
   * Returns the events (a `remote_change` with `fields: []` and `deleted: true` for each dropped entity that
   * was not deleted already), how many views went, and whether none are left (then the unavailable entities
   * not named again since the reset leave the set too, and the reset is over); call again until `done`.
   * Does nothing when no reset is in progress.
   */
  async dropStale(limit = STALE_CHUNK): Promise<{ events: SyncEvent[]; dropped: number; done: boolean }> {
    const events: SyncEvent[] = [];
    const tx = this.tx(["meta", "entities"]);
    const meta = tx.objectStore("meta");
    if ((await meta.get(STALE)) !== true) {
      await tx.done;
      return { events, dropped: 0, done: true };
    }
    const epoch = await epochOf(tx);
    const entities = tx.objectStore("entities");
    const rows = await entities.index("epoch").getAll(IDBKeyRange.upperBound(epoch, true), limit);
    for (const row of rows) {
      await entities.delete([row.collection, row.entity]);
      if (!row.deleted) events.push({ type: "remote_change", collection: row.collection, entity: row.entity, fields: [], deleted: true });
    }
    const done = rows.length < limit;
    if (done) {
      const set = ((await meta.get("unavailable")) as StoredUnavailable[] | undefined) ?? [];
      const kept = set.filter((u) => (u.epoch ?? 0) >= epoch);
      if (kept.length !== set.length) await meta.put(kept, "unavailable");
      await meta.delete(STALE);
    }
    await tx.done;
    return { events, dropped: rows.length, done };
  }

  /** A push found the server behind (it lost acknowledged changes) and the synced state was not dropped yet. */
  async serverBehind(): Promise<boolean> {
    return (await this.meta<boolean>(SERVER_BEHIND)) === true;
  }
}

function unavailableKey(u: { collection: string; entity: string }): string {
  return `${u.collection}\u0000${u.entity}`;
}

async function unavailableSet(tx: Tx): Promise<Map<string, StoredUnavailable>> {
  const items = ((await tx.objectStore("meta").get("unavailable")) as StoredUnavailable[] | undefined) ?? [];
  return new Map(items.map((u) => [unavailableKey(u), u]));
}

async function epochOf(tx: Tx): Promise<number> {
  return ((await tx.objectStore("meta").get(EPOCH)) as number | undefined) ?? 0;
}

/** A stored view as readers see it: without its epoch. */
function bare(row: StoredView | undefined): EntityView | undefined {
  if (row === undefined) return undefined;
  const view: EntityView & { epoch?: number } = { ...row };
  delete view.epoch;
  return view;
}

/** The app-visible state changed (a server restored from a backup may even go back). */
function differs(old: EntityView, now: EntityView): boolean {
  return old.deleted !== now.deleted || !sameJson(old.vv, now.vv) || !sameJson(old.fields, now.fields);
}

/** Deep equality of JSON values, whatever the order of object keys; a member set to `undefined` counts as absent. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const k of keys) if (!sameJson(ra[k], rb[k])) return false;
  return true;
}

/** Acked changes the server state now includes are no longer needed for reads. */
async function dropCovered(tx: Tx, view: EntityView, replica: string): Promise<void> {
  const outbox = tx.objectStore("outbox");
  const mine = view.vv[replica] ?? 0;
  for (const row of await outbox.index("entity").getAll(entityRange(view.collection, view.entity))) {
    if (row.acked && row.n <= mine) await outbox.delete(row.seq);
  }
}

/** The HLC after the siblings' stamps (so our next write orders after them). */
function observeSiblings(hlc: Hlc, view: EntityView): Hlc {
  for (const f of Object.values(view.fields)) for (const s of f.siblings ?? []) hlc = observe(hlc, s.hlc);
  return hlc;
}

/** Ids of the attachments a view's registers reference (value or sibling, PROTOCOL §10.1). */
function referenced(view: EntityView): string[] {
  const ids: string[] = [];
  for (const f of Object.values(view.fields)) {
    if (f.kind !== "register") continue;
    for (const value of [f.value, ...(f.siblings ?? []).map((s) => s.value)]) {
      const ref = asAttachmentRef(value);
      if (ref !== null) ids.push(ref.id);
    }
  }
  return ids;
}

function entityRange(collection: string, entity: string): IDBKeyRange {
  return IDBKeyRange.bound([collection, entity, 0], [collection, entity, Infinity]);
}

async function hasPending(tx: Tx, n: number): Promise<boolean> {
  return (await tx.objectStore("outbox").index("pending").count([0, n])) > 0;
}

/** Give pending changes numbered `fromN` and up the numbers `start, start + 1, ...`, keeping order. */
async function renumber(tx: Tx, fromN: number, start: number): Promise<number> {
  const outbox = tx.objectStore("outbox");
  const rows = await outbox.index("pending").getAll(IDBKeyRange.bound([0, fromN], [0, Infinity]));
  // Free the old numbers first: the new ones may overlap them.
  for (const [i, row] of rows.entries()) {
    const n = start + i;
    const change = { ...row.change, n };
    await outbox.put({ ...row, n, change, size: new TextEncoder().encode(JSON.stringify(change)).length });
  }
  if (rows.length) await tx.objectStore("meta").put(start + rows.length - 1, "counter");
  return rows.length;
}

function siblingDots(f: FieldView | undefined): string {
  return (f?.siblings ?? [])
    .map((s) => `${s.replica}\u0000${s.n}`)
    .sort()
    .join("\u0001");
}

/** `remote_change` if another replica's changes arrived; `conflict` for a new set of siblings. */
export function eventsFor(old: EntityView | undefined, delta: EntityView, me: string): SyncEvent[] {
  const events: SyncEvent[] = [];
  const before = old?.vv ?? {};
  if (Object.entries(delta.vv).some(([r, n]) => r !== me && n > (before[r] ?? 0))) {
    events.push({
      type: "remote_change",
      collection: delta.collection,
      entity: delta.entity,
      fields: Object.keys(delta.fields).sort(),
      deleted: delta.deleted,
    });
  }
  for (const [name, f] of Object.entries(delta.fields).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (f.kind !== "register" || !f.siblings || f.siblings.length < 2) continue;
    if (siblingDots(f) === siblingDots(old?.fields[name])) continue; // the same conflict, already reported
    events.push({
      type: "conflict",
      collection: delta.collection,
      entity: delta.entity,
      field: name,
      value: f.value,
      siblings: f.siblings,
      mine: f.siblings.some((s) => s.replica === me),
    });
  }
  return events;
}
