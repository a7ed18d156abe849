/**
 * Several tabs, one sync stream (as PowerSync's web SDK does): the tab that holds the
 * Web Lock `syncclient-leader:<db>` runs the sync loop; the others are followers. They
 * share one IndexedDB database, so a follower's write is on disk like any other; it
 * tells the leader over a BroadcastChannel to push soon, and the leader broadcasts
 * the events of each round so every tab's subscribers and watches see them.
 *
 * Every push-and-pull round, the leader's or an explicit `sync()` in any tab (or the
 * service worker), runs under a second lock, `syncclient-round:<db>`, so two rounds
 * never read the outbox at the same time and no change is pushed twice.
 *
 * Where `navigator.locks` is missing (node, old browsers) an in-process lock manager
 * with the same semantics stands in; it coordinates clients within one JavaScript realm.
 */
import type { SyncEvent } from "./events.js";

export interface LockLike {
  name: string;
}
export interface LockOptions {
  ifAvailable?: boolean;
  signal?: AbortSignal;
}
/** The part of the Web Locks API (`navigator.locks`) the SDK uses. */
export interface LockManagerLike {
  request<T>(name: string, options: LockOptions, callback: (lock: LockLike | null) => Promise<T> | T): Promise<T>;
}

/** Exclusive locks within one realm, with the Web Locks API's queueing, `ifAvailable` and `signal`. */
export class LocalLocks implements LockManagerLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, (() => void)[]>();

  async request<T>(name: string, options: LockOptions, callback: (lock: LockLike | null) => Promise<T> | T): Promise<T> {
    if (this.held.has(name)) {
      if (options.ifAvailable) return callback(null);
      await new Promise<void>((resolve, reject) => {
        const queue = this.queues.get(name) ?? [];
        this.queues.set(name, queue);
        const grant = (): void => {
          options.signal?.removeEventListener("abort", abort);
          resolve();
        };
        const abort = (): void => {
          const i = queue.indexOf(grant);
          if (i >= 0) queue.splice(i, 1);
          reject(new DOMException("the lock request was aborted", "AbortError"));
        };
        if (options.signal?.aborted) return abort();
        options.signal?.addEventListener("abort", abort, { once: true });
        queue.push(grant);
      });
    }
    this.held.add(name);
    try {
      return await callback({ name });
    } finally {
      const next = this.queues.get(name)?.shift();
      if (next) next();
      else this.held.delete(name);
    }
  }
}

const sharedLocalLocks = new LocalLocks();

export function defaultLocks(): LockManagerLike {
  const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
  return nav?.locks ?? sharedLocalLocks;
}

/** Messages between the tabs of one database. */
export type TabMessage =
  | { kind: "event"; event: SyncEvent }
  | { kind: "changed" }
  | { kind: "wake" }
  /** a new follower asks the leader for its status */
  | { kind: "ask" }
  | { kind: "status"; connection: string; lastSyncAt: number | null; lastError: string | null; outbox: number };

export class TabChannel {
  private readonly channel: BroadcastChannel | null;

  constructor(dbName: string, onMessage: (m: TabMessage) => void) {
    const BC = (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
    this.channel = BC ? new BC(`syncclient:${dbName}`) : null;
    if (this.channel) this.channel.onmessage = (ev: MessageEvent<TabMessage>) => onMessage(ev.data);
  }

  post(message: TabMessage): void {
    this.channel?.postMessage(message);
  }

  close(): void {
    this.channel?.close();
  }
}
