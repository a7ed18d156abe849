/**
 * One sync round, as the Python SDK's `RoundTrip`: push the outbox in batches, handling
 * every result (PROTOCOL §4.2), then pull until `more` is false, storing each page with
 * its cursor in one transaction (§4.4), then read back entities the server named
 * `unavailable` when their time has come (`UnavailableEntities`). Memory is bounded by
 * one batch and one page.
 */
import { ProtocolViolation, ServerError, SyncError } from "./errors.js";
import type { SyncEvent } from "./events.js";
import type { LocalStore } from "./store.js";
import type { Transport } from "./transport/types.js";
import type { UnavailableEntities } from "./unavailable.js";

/** Push rounds in a row that settle nothing before we give up (a misbehaving server). */
const MAX_IDLE_ROUNDS = 5;
/** Resets in one pull before we give up. */
const MAX_RESETS = 2;

export interface SyncStats {
  /** changes the server settled: applied or duplicate */
  pushed: number;
  /** entities pulled (an unavailable entity read back with its whole state counts too) */
  pulled: number;
  /** changes the server rejected (dead letters) */
  rejected: number;
  applied: number;
  duplicates: number;
  renumbered: number;
  pages: number;
  resets: number;
  /** entities dropped locally: evictions pages carried, and views the pull after a reset did not bring back */
  dropped: number;
}

export function emptyStats(): SyncStats {
  return { pushed: 0, pulled: 0, rejected: 0, applied: 0, duplicates: 0, renumbered: 0, pages: 0, resets: 0, dropped: 0 };
}

export interface RoundTripOptions {
  batchSize?: number;
  batchBytes?: number;
  pullLimit?: number;
  collections?: string[] | null;
  /** reads back entities a pull named `unavailable` after each round (none without it) */
  unavailable?: UnavailableEntities;
}

export class RoundTrip {
  private readonly batchSize: number;
  private readonly batchBytes: number;
  private readonly pullLimit: number;
  private readonly collections: string[] | null;
  private readonly unavailable: UnavailableEntities | undefined;

  constructor(
    private readonly store: LocalStore,
    private readonly emit: (event: SyncEvent) => void,
    options: RoundTripOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 500;
    this.batchBytes = options.batchBytes ?? 1 << 20;
    this.pullLimit = options.pullLimit ?? 1000;
    this.collections = options.collections ?? null;
    this.unavailable = options.unavailable;
    if (this.batchSize < 1 || this.batchSize > 500) throw new RangeError("batchSize must be 1..500 (PROTOCOL §4.1)");
  }

  async run(transport: Transport, stats: SyncStats = emptyStats()): Promise<SyncStats> {
    await this.pushAndSettle(transport, stats);
    await this.pull(transport, stats);
    if (this.unavailable) stats.pulled += await this.unavailable.afterRound();
    return stats;
  }

  /**
   * `push`, then the reset a server that lost acknowledged changes calls for: the service worker's flush
   * and every round run this (under the round lock), so the cursor is dropped whoever found out.
   */
  async pushAndSettle(transport: Transport, stats: SyncStats): Promise<void> {
    try {
      await this.push(transport, stats);
    } finally {
      await this.resetIfServerBehind(stats);
    }
  }

  /**
   * The server forgot acknowledged changes (restored from a backup), so our cursor may point past its log:
   * pull from the start (never touching the outbox; the synced state stays shown until that pull ends). The verdict is stored with the renumbering that found it, so
   * it survives a push that failed later on, a crash, or a service worker that pushed while no page pulled.
   */
  async resetIfServerBehind(stats: SyncStats): Promise<void> {
    if (!(await this.store.serverBehind())) return;
    await this.store.reset();
    stats.resets++;
    this.emit({ type: "reset" });
  }

  /** Push every pending change; true if the server turned out to have lost acknowledged ones. */
  async push(transport: Transport, stats: SyncStats): Promise<boolean> {
    // Changes written while we push wait for the next round, so a busy app cannot keep us here.
    let upTo = await this.store.counter();
    let size = this.batchSize;
    let idle = 0;
    let serverBehind = false;
    for (;;) {
      const rows = await this.store.pending(size, this.batchBytes, upTo);
      if (!rows.length) break;
      let response;
      try {
        response = await transport.push({ replica: this.store.replica, changes: rows.map((r) => r.change) });
      } catch (exc) {
        if (!(exc instanceof ServerError) || exc.status !== 413) throw exc;
        if (rows.length > 1) {
          size = Math.max(1, Math.floor(rows.length / 2)); // the server's limits are lower than ours
          continue;
        }
        // One change alone is too large: it can never be accepted, so it must not block the rest. The
        // changes after it take its number down, so the server sees no gap (and we no restored server).
        const { rejection, renumbered } = await this.store.rejectLocally(rows[0]!, exc.code, exc.message);
        stats.rejected++;
        stats.renumbered += renumbered;
        this.emit(rejection);
        continue;
      }
      const outcome = await this.store.recordResults(rows, response.results);
      stats.applied += outcome.applied;
      stats.duplicates += outcome.duplicates;
      stats.pushed += outcome.applied + outcome.duplicates;
      stats.rejected += outcome.rejected.length;
      stats.renumbered += outcome.renumbered;
      serverBehind ||= outcome.serverBehind;
      if (outcome.renumbered) upTo = Math.max(upTo, outcome.lastN);
      for (const event of outcome.rejected) this.emit(event);
      const progress = outcome.applied + outcome.duplicates + outcome.rejected.length > 0;
      idle = progress ? 0 : idle + 1;
      if (idle > MAX_IDLE_ROUNDS) throw new ProtocolViolation("the server settled none of the pushed changes in several rounds");
    }
    return serverBehind;
  }

  async pull(transport: Transport, stats: SyncStats): Promise<void> {
    const ackedBefore = await this.store.maxAckedSeq();
    let cursor = await this.store.cursor();
    let resets = 0;
    for (;;) {
      let page;
      try {
        page = await transport.pull({ cursor, limit: this.pullLimit, collections: this.collections });
      } catch (exc) {
        if (!(exc instanceof ServerError) || exc.code !== "invalid_cursor" || cursor === null) throw exc;
        page = null; // a cursor of another server (restored, replaced): start over
      }
      if (page === null || page.reset) {
        if (cursor === null || resets >= MAX_RESETS) {
          throw new SyncError("the server keeps asking for a reset, even of a pull from the beginning");
        }
        resets++;
        stats.resets++;
        await this.store.reset();
        this.emit({ type: "reset" });
        cursor = null;
        continue;
      }
      const events = await this.store.applyPage(page.changes, page.evictions, page.cursor, page.unavailable);
      stats.pages++;
      stats.pulled += page.changes.length;
      stats.dropped += page.evictions.length;
      for (const event of events) this.emit(event);
      cursor = page.cursor;
      if (!page.more) break;
    }
    // A pull that began with (or resumed) a reset has brought the server's whole state: what it did not
    // bring back is gone for this replica. Bounded transactions; an interruption resumes with the next pull.
    for (;;) {
      const { events, dropped, done } = await this.store.dropStale();
      stats.dropped += dropped;
      for (const event of events) this.emit(event);
      if (done) break;
    }
    await this.store.dropAcked(ackedBefore);
  }
}
