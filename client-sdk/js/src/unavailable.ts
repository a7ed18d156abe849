/**
 * Entities the server named `unavailable` (PROTOCOL §4.4): their stored state failed the
 * server's integrity check, so a pull went past them. The device keeps what it holds
 * (`LocalStore.applyPage` keeps the set in IndexedDB with the page that named them) and
 * reads each one again with `GET /v1/entities/{collection}/{entity}` after later rounds:
 *
 * - 200: the whole state replaces the device's copy (as a pull from `cursor: null` would
 *   send it), the entity leaves the set, and a `remote_change` event tells the app;
 * - 404: it is gone or out of the token's scope: dropped locally, it leaves the set;
 * - anything else (500 `data_integrity` until an operator runs `syncserver repair`, the
 *   network): it stays for a later round.
 *
 * Reads are sequential, at most `batch` per round, and not in the round that named the
 * entity (the server has just said it cannot read it). While some stay, the next reads wait
 * `Backoff` delays (30-60 s, growing to 5-10 min), whatever the number of rounds meanwhile.
 */
import { Backoff } from "./backoff.js";
import { ServerError, SyncError } from "./errors.js";
import type { SyncEvent } from "./events.js";
import type { LocalStore } from "./store.js";
import type { EntityView, Unavailable } from "./types.js";

/** Where an entity is read again: `HttpTransport.entity` (undefined on 404). */
export interface EntityReader {
  entity(collection: string, entity: string): Promise<EntityView | undefined>;
}

export interface UnavailableOptions {
  /** delays between reads while some stay (seconds; default 60 s doubling to 10 min, equal jitter) */
  backoff?: Backoff;
  /** wall clock in milliseconds (tests) */
  now?: () => number;
  /** at most this many reads per round (default 50) */
  batch?: number;
}

export class UnavailableEntities {
  private readonly backoff: Backoff;
  private readonly now: () => number;
  private readonly batch: number;
  /** While reads fail: when the next ones may go out (ms). */
  private dueAt: number | null = null;
  /** The set as the last round left it: entities named since then wait for the next round. */
  private known = new Set<string>();

  constructor(
    private readonly store: LocalStore,
    private readonly reader: EntityReader,
    private readonly emit: (event: SyncEvent) => void,
    options: UnavailableOptions = {},
  ) {
    this.backoff = options.backoff ?? new Backoff(60, 600);
    this.now = options.now ?? Date.now;
    this.batch = options.batch ?? 50;
  }

  /** The entities not read back yet, by collection and entity. */
  list(): Promise<Unavailable[]> {
    return this.store.unavailable();
  }

  /**
   * After a sync round: read back the unavailable entities if their time has come. Returns
   * how many left the set. Never throws for a read that fails: the entity waits.
   */
  async afterRound(): Promise<number> {
    const items = await this.store.unavailable();
    const known = this.known;
    this.known = new Set(items.map(key));
    if (!items.length) {
      this.dueAt = null;
      this.backoff.reset();
      return 0;
    }
    // Not in the round that named an entity (or the first after a restart): the server has just said it cannot read it.
    const ready = items.filter((u) => known.has(key(u)));
    if (!ready.length || (this.dueAt !== null && this.now() < this.dueAt)) return 0;
    let resolved = 0;
    let waiting = 0;
    for (const item of ready.slice(0, this.batch)) {
      let view: EntityView | undefined;
      try {
        view = await this.reader.entity(item.collection, item.entity);
      } catch (exc) {
        if (!(exc instanceof SyncError)) throw exc;
        waiting++;
        if (exc instanceof ServerError && exc.code !== "data_integrity") {
          console.warn(`syncclient: reading unavailable ${item.collection}/${item.entity} back: ${exc.message}`);
        }
        continue; // 500 data_integrity until repaired, or the network: a later round
      }
      const events = await this.store.resolveUnavailable(item, view);
      if (events.length) {
        resolved++;
        this.known.delete(key(item));
      }
      for (const event of events) this.emit(event);
    }
    if (waiting) {
      this.dueAt = this.now() + this.backoff.next() * 1000;
    } else {
      // All read back (the rest of a long list goes out next round).
      this.dueAt = null;
      this.backoff.reset();
    }
    return resolved;
  }
}

function key(u: Unavailable): string {
  return `${u.collection}\u0000${u.entity}`;
}
