/**
 * What a client tells the app. `client.subscribe(handler)` receives every event;
 * in a tab that does not sync (a follower) the leader's events arrive through a
 * BroadcastChannel, so every tab sees the same stream.
 */
import type { RemoteStatus, UploadState } from "./attachments-ref.js";
import type { Change, Json, SiblingView } from "./types.js";

export type ConnectionState = "live" | "http" | "offline" | "connecting";

export type SyncEvent =
  /**
   * A pull brought changes other replicas made to this entity. Also, with `fields: []` and `deleted: true`,
   * an entity this device showed left it: evicted (out of the token's scope now, PROTOCOL §4.4
   * `evictions`) or not brought back by the pull from the start after a `reset`.
   */
  | { type: "remote_change"; collection: string; entity: string; fields: string[]; deleted: boolean }
  /** A register now holds concurrent values; `value` is the rule's pick; `mine`: one of them is ours. */
  | {
      type: "conflict";
      collection: string;
      entity: string;
      field: string;
      value: Json;
      siblings: SiblingView[];
      mine: boolean;
    }
  /** The server refused one of our changes (kept as a dead letter there); `code` is stable (PROTOCOL §6). */
  | {
      type: "rejected";
      id: string;
      n: number;
      collection: string;
      entity: string;
      code: string;
      message: string;
      change: Change;
    }
  /** The sync loop's link to the server changed; `retryIn` (seconds) when offline. */
  | { type: "connection"; state: ConnectionState; error: string | null; retryIn: number | null }
  /** The number of changes waiting to be acknowledged changed. */
  | { type: "outbox"; pending: number }
  /**
   * A pull went past this entity: its stored state failed the server's integrity check
   * (`code`: `data_integrity`). What the device holds of it stays; the client reads it again
   * after later rounds, and a `remote_change` follows when it is back (or gone: `deleted`).
   * `client.unavailable()` lists the entities still waiting (PROTOCOL §4.4).
   */
  | { type: "unavailable"; collection: string; entity: string; code: string }
  /**
   * The server dropped our cursor (tombstones collected, or it was restored from a backup): the client pulls
   * from the start. The synced state stays shown (and the context of local writes) until that pull ends,
   * then what it did not bring back goes, each with a `remote_change` (`deleted: true`); the outbox is kept.
   */
  | { type: "reset" }
  /**
   * An attachment a pulled entity references changed status on the server (PROTOCOL §10.2), mostly
   * `pending` -> `available` (fetch it now) or `refused`; heard from a pull or the status refresh.
   */
  | { type: "attachment"; id: string; status: RemoteStatus; previous: RemoteStatus | null }
  /** An attached file's upload advanced (`sent` of `total` bytes on the server) or changed state. */
  | { type: "attachment_progress"; id: string; state: UploadState; sent: number; total: number }
  /**
   * The server refused an attached file for good (kept as a dead letter there); `code` is stable
   * (`attachment_too_large`, `media_type_not_allowed`, `attachment_hash_mismatch`, PROTOCOL §6, §10).
   * The reference stays in the entity (`refused` in its view); other uploads go on.
   */
  | {
      type: "attachment_rejected";
      id: string;
      collection: string;
      entity: string;
      field: string;
      code: string;
      message: string;
    };

export type Handler = (event: SyncEvent) => void;

/** Synchronous fan-out; a failing handler is reported to the console and never stops a sync. */
export class EventBus {
  private readonly handlers = new Set<Handler>();

  subscribe(handler: Handler): () => void {
    const entry: Handler = (e) => handler(e);
    this.handlers.add(entry);
    return () => this.handlers.delete(entry);
  }

  emit(event: SyncEvent): void {
    for (const handler of [...this.handlers]) {
      try {
        handler(event);
      } catch (exc) {
        console.error("syncclient: event handler failed", exc);
      }
    }
  }
}
