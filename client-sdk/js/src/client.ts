/**
 * `SyncClient`: a durable IndexedDB outbox, optimistic reads, and sync over the
 * WebSocket channel or HTTP, for one replica (one browser profile and database).
 *
 * ```ts
 * const client = await SyncClient.open({ url, token: () => fetchToken() });
 * const deliveries = client.collection("deliveries");
 * await deliveries.set("dlv-1", { status: "delivered" }); // on disk when it resolves
 * await client.start();                                    // sync in the background
 * ```
 */
import { Attachments } from "./attachments.js";
import { Backoff } from "./backoff.js";
import { tick } from "./clock.js";
import { ServerError, SyncError } from "./errors.js";
import { EventBus, type ConnectionState, type Handler, type SyncEvent } from "./events.js";
import { optimisticView, visible } from "./optimistic.js";
import { emptyStats, RoundTrip, type SyncStats } from "./roundtrip.js";
import { Collection, type Schema } from "./schema.js";
import { LocalStore, type NewUpload, type Rejection } from "./store.js";
import { defaultLocks, TabChannel, type LockManagerLike, type TabMessage } from "./tabs.js";
import * as text from "./text.js";
import { TokenSource } from "./token.js";
import { HttpTransport } from "./transport/http.js";
import { isLive, type Transport, type TokenProvider } from "./transport/types.js";
import { connectWebSocket, type WebSocketConstructor } from "./transport/ws.js";
import type { Change, EntityView, Json, Op, SetElement, SiblingView, Unavailable } from "./types.js";
import { UnavailableEntities } from "./unavailable.js";
import { validateChange } from "./wire.js";
import { Signal } from "./signal.js";

/** Background Sync tag the service worker helper (`registerOutboxSync`) listens for. */
export const BACKGROUND_SYNC_TAG = "syncclient-outbox";
/** How long `requestBackgroundSync` waits for an active service worker before it falls back to an `online` listener. */
const SERVICE_WORKER_READY_MS = 5_000;
/** Largest encoded change we queue: it must fit a push body (server default 4 MiB) with room to spare. */
export const MAX_CHANGE_BYTES = 1 << 20;

export interface SyncClientOptions {
  /** sync server base URL */
  url: string;
  /** a token, or a function called again on 401/4401/token_expired and before `exp` */
  token: TokenProvider;
  /** default: generated once and persisted in IndexedDB */
  replicaId?: string;
  /** IndexedDB database name, default "syncclient" */
  dbName?: string;
  /** default "auto": the WebSocket live channel, HTTP when it cannot connect */
  transport?: "auto" | "ws" | "http";
  /** the server's collection schema, so optimistic reads use its kinds and rules */
  schema?: Schema;
  /** sync only these collections (default: all the token sees) */
  collections?: string[] | null;
  /** how often the loop polls over HTTP when no live channel announces changes (default 30 s) */
  syncIntervalMs?: number;
  /**
   * the longest a live channel that failed while HTTP worked is set aside (default 5 min): the
   * first failure sets it aside for 1 s, each failure in a row 4 times longer, up to this; an
   * `online` event retries it at once
   */
  liveRetryMs?: number;
  /** retry delays of the background loop */
  backoff?: Backoff;
  /** replaces `fetch` (tests) */
  fetch?: typeof fetch;
  /** replaces the global `WebSocket` (node: the `ws` package) */
  WebSocket?: WebSocketConstructor;
  /** replaces `navigator.locks` (tests) */
  locks?: LockManagerLike;
  /** wall clock in milliseconds (tests) */
  now?: () => number;
  /**
   * attachments: bytes per tus PATCH (default 1 MiB) and of the read cache (default 64 MiB); the first delay
   * between refreshes of pending attachment statuses, doubling to 60 s (default 2000 ms); how long an upload
   * request may make no progress before it is aborted and retried later (default 60 000 ms)
   */
  attachments?: { chunkSize?: number; cacheBytes?: number; statusRefreshMs?: number; idleTimeoutMs?: number };
}

export interface ClientStatus {
  connection: ConnectionState;
  /** this tab runs the sync loop */
  leader: boolean;
  /** changes waiting for the server's acknowledgement */
  outbox: number;
  lastSyncAt: number | null;
  lastError: string | null;
}

export interface Row {
  entity: string;
  fields: Record<string, Json>;
}

type OpsFor = Op[] | ((view: EntityView | undefined) => Op[]);

export class SyncClient {
  readonly replicaId: string;
  /** Files referenced from register fields: attach offline, upload in the background, fetch (PROTOCOL §10). */
  readonly attachments: Attachments;
  private readonly events = new EventBus();
  private readonly watchers = new Set<() => void>();
  private readonly tokens: TokenSource;
  private readonly http: HttpTransport;
  private readonly roundtrip: RoundTrip;
  private readonly unavailableEntities: UnavailableEntities;
  private readonly tabs: TabChannel;
  private readonly locks: LockManagerLike;
  private readonly backoff: Backoff;
  private readonly wakeSignal = new Signal();
  private readonly onlineSignal = new Signal();
  private readonly stopSignal = new Signal();
  private readonly release = new AbortController();
  private releaseLeader: (() => void) | null = null;
  private started = false;
  private closed = false;
  private leader = false;
  private loopDone: Promise<void> | null = null;
  private live: Transport | null = null;
  private liveFailedAt = -Infinity;
  private liveFailures = 0;
  private liveUnconfirmed: number | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** The `exp` of the token the refresh timer was armed for: a round or a new token re-arms it only for another. */
  private refreshFor: number | null = null;
  /** Delays between refreshes that brought no token good for longer: 30-60 s, doubling to 5-10 min, jittered. */
  private readonly tokenRetry = new Backoff(60, 600);
  private refusedInARow = 0;
  private onlineListener: (() => void) | null = null;
  private readonly state: Omit<ClientStatus, "leader"> = {
    connection: "offline",
    outbox: 0,
    lastSyncAt: null,
    lastError: null,
  };

  private constructor(
    readonly store: LocalStore,
    private readonly options: SyncClientOptions,
    readonly dbName: string,
  ) {
    this.replicaId = store.replica;
    // Every token we obtain is kept for the service worker's Background Sync.
    this.tokens = new TokenSource(options.token, options.now, (token) => {
      store.setMeta("token", token).catch(() => undefined);
    });
    this.http = new HttpTransport(options.url, this.tokens, options.fetch);
    const emitShared = (e: SyncEvent): void => this.emitShared(e);
    this.unavailableEntities = new UnavailableEntities(store, this.http, emitShared, options.now ? { now: options.now } : {});
    this.roundtrip = new RoundTrip(store, emitShared, {
      collections: options.collections ?? null,
      unavailable: this.unavailableEntities,
    });
    this.locks = options.locks ?? defaultLocks();
    this.backoff = options.backoff ?? new Backoff();
    this.tabs = new TabChannel(dbName, (m) => this.onTabMessage(m));
    this.attachments = new Attachments(store, {
      url: options.url,
      dbName,
      tokens: this.tokens,
      locks: this.locks,
      emit: (e) => {
        this.emitShared(e);
        if (e.type === "attachment") this.changed(false); // views hold the statuses: watches read again
      },
      write: (collection, entity, ops, upload) => this.write(collection, entity, ops, upload),
      statusOf: (ids) => this.http.attachmentStatus(ids),
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...options.attachments,
    });
  }

  /** Open (or create) the local database. Nothing touches the network until `start()` or `sync()`. */
  static async open(options: SyncClientOptions): Promise<SyncClient> {
    const dbName = options.dbName ?? "syncclient";
    const store = await LocalStore.open(dbName, options.replicaId);
    const client = new SyncClient(store, options, dbName);
    client.state.outbox = await store.pendingCount();
    if (typeof options.token === "string") await store.setMeta("token", options.token);
    return client;
  }

  // --- writes and reads ----------------------------------------------------------

  collection(name: string): CollectionHandle {
    return new CollectionHandle(this, name);
  }

  private coll(name: string): Collection {
    return new Collection(name, this.options.schema?.[name]);
  }

  /**
   * Queue one change; resolves with it once its IndexedDB transaction committed.
   * `upload` (from `attachments.attach`) commits an attached file in the same transaction.
   */
  async write(collection: string, entity: string, ops: OpsFor, upload?: NewUpload): Promise<Change> {
    this.assertOpen();
    const wall = (this.options.now ?? Date.now)();
    const coll = this.coll(collection);
    const change = await this.store.enqueue(collection, entity, (ctx) => {
      const list =
        typeof ops === "function"
          ? ops(optimisticView(ctx.stored, ctx.outbox.map((r) => r.change), this.replicaId, coll))
          : ops;
      // Context is the vv of the last *pulled* state (PROTOCOL §2); our pending changes are implied by n.
      const draft: Change = {
        id: crypto.randomUUID(),
        n: ctx.counter + 1,
        collection,
        entity,
        hlc: tick(ctx.hlc, wall),
        context: { ...(ctx.stored?.vv ?? {}) },
        ops: list,
      };
      return validated(draft);
    }, { withOutbox: typeof ops === "function", ...(upload ? { upload } : {}) });
    this.state.outbox++;
    this.emit({ type: "outbox", pending: this.state.outbox });
    this.changed(true);
    if (this.leader) {
      this.wakeSignal.set();
      if (upload) this.attachments.wake();
    } else this.tabs.post({ kind: "wake" });
    return change;
  }

  /** The optimistic view of one entity: the last pulled view with the outbox applied. */
  async view(collection: string, entity: string): Promise<EntityView | undefined> {
    const [stored, rows] = await Promise.all([this.store.view(collection, entity), this.store.outbox(collection, entity)]);
    return optimisticView(stored, rows.map((r) => r.change), this.replicaId, this.coll(collection));
  }

  /** Optimistic views of every entity of a collection (deleted ones included), by entity id. */
  async views(collection: string): Promise<Map<string, EntityView>> {
    const [stored, rows] = await Promise.all([this.store.views(collection), this.store.outbox(collection)]);
    const byEntity = new Map<string, Change[]>();
    for (const r of rows) byEntity.set(r.entity, [...(byEntity.get(r.entity) ?? []), r.change]);
    const storedBy = new Map(stored.map((v) => [v.entity, v]));
    const out = new Map<string, EntityView>();
    const coll = this.coll(collection);
    for (const entity of [...new Set([...storedBy.keys(), ...byEntity.keys()])].sort()) {
      const v = optimisticView(storedBy.get(entity), byEntity.get(entity) ?? [], this.replicaId, coll);
      if (v) out.set(entity, v);
    }
    return out;
  }

  /** Changes the server rejected, kept until `clearRejections` (events can be missed; this cannot). */
  rejections(): Promise<Rejection[]> {
    return this.store.rejections();
  }

  clearRejections(ids?: string[]): Promise<void> {
    return this.store.clearRejections(ids);
  }

  /**
   * Entities a pull named `unavailable` (the server could not read their stored state) and
   * not read back yet; each keeps what this device holds of it meanwhile (PROTOCOL §4.4).
   */
  unavailable(): Promise<Unavailable[]> {
    return this.unavailableEntities.list();
  }

  pendingCount(): Promise<number> {
    return this.store.pendingCount();
  }

  // --- events and reactive queries ------------------------------------------------

  /** Call `handler` with every event (remote changes, conflicts, rejections, connection, outbox, reset). */
  subscribe(handler: Handler): () => void {
    return this.events.subscribe(handler);
  }

  /**
   * Run `query` now and again after every local write (in any tab) and every remote
   * change; `callback` gets each result. Runs never overlap; a burst of changes
   * re-runs the query once more at the end. Returns an unsubscribe function.
   */
  watch<T>(query: () => Promise<T> | T, callback: (result: T) => void): () => void {
    let active = true;
    let running = false;
    let again = false;
    const run = (): void => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      void (async () => {
        do {
          again = false;
          try {
            const result = await query();
            if (active) callback(result);
          } catch (exc) {
            if (active) console.error("syncclient: watched query failed", exc);
          }
        } while (again && active);
        running = false;
      })();
    };
    this.watchers.add(run);
    run();
    return () => {
      active = false;
      this.watchers.delete(run);
    };
  }

  status(): ClientStatus {
    return { ...this.state, leader: this.leader };
  }

  private emit(event: SyncEvent): void {
    if (event.type === "connection") this.state.connection = event.state;
    if (event.type === "outbox") this.state.outbox = event.pending;
    this.events.emit(event);
  }

  /** An event of a round: here, and in every other tab. */
  private emitShared(event: SyncEvent): void {
    this.emit(event);
    this.tabs.post({ kind: "event", event });
  }

  private changed(local: boolean): void {
    for (const w of [...this.watchers]) w();
    if (local) this.tabs.post({ kind: "changed" });
  }

  private onTabMessage(m: TabMessage): void {
    switch (m.kind) {
      case "event":
        this.emit(m.event);
        if (m.event.type !== "connection" && m.event.type !== "attachment_progress") this.changed(false);
        break;
      case "changed":
        this.changed(false);
        break;
      case "wake":
        if (this.leader) {
          this.wakeSignal.set();
          this.attachments.wake();
        }
        break;
      case "ask":
        if (this.leader) this.broadcastStatus();
        break;
      case "status":
        if (!this.leader) {
          Object.assign(this.state, { lastSyncAt: m.lastSyncAt, lastError: m.lastError, outbox: m.outbox });
          this.state.connection = m.connection as ConnectionState;
        }
        break;
    }
  }

  // --- sync ------------------------------------------------------------------------

  /** One push-then-pull round over HTTP (under the round lock shared by every tab). */
  async sync(): Promise<{ pushed: number; pulled: number; rejected: number } & SyncStats> {
    this.assertOpen();
    return this.round(this.http);
  }

  private async round(transport: Transport): Promise<SyncStats> {
    const stats = emptyStats();
    try {
      await this.locks.request(`syncclient-round:${this.dbName}`, {}, () => this.roundtrip.run(transport, stats));
      this.state.lastSyncAt = (this.options.now ?? Date.now)();
      this.state.lastError = null;
      // A status is not a change: ask about attachments still pending (the leader only; others hear its events).
      if (this.leader) void this.attachments.afterRound();
    } catch (exc) {
      this.state.lastError = String(exc);
      throw exc;
    } finally {
      const pending = await this.store.pendingCount().catch(() => this.state.outbox);
      if (pending !== this.state.outbox || stats.pushed || stats.rejected) {
        this.emitShared({ type: "outbox", pending });
      }
      if (stats.pulled || stats.pushed || stats.rejected || stats.resets || stats.dropped) this.changed(true);
      this.broadcastStatus();
    }
    return stats;
  }

  private broadcastStatus(): void {
    const { connection, lastSyncAt, lastError, outbox } = this.state;
    this.tabs.post({ kind: "status", connection, lastSyncAt, lastError, outbox });
  }

  /**
   * Take part in syncing: the tab that wins the leader lock runs the sync loop (live
   * channel, HTTP fallback, backoff); the others follow through the BroadcastChannel
   * and take over when the leader's tab closes. Resolves once the role is known.
   */
  async start(): Promise<void> {
    this.assertOpen();
    if (this.started) return;
    this.started = true;
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (typeof g.addEventListener === "function") {
      this.onlineListener = () => {
        // The network changed: a live channel refused while it came back may work now.
        this.liveFailures = 0;
        this.liveFailedAt = -Infinity;
        this.onlineSignal.set();
        if (this.leader) this.attachments.wake();
      };
      g.addEventListener("online", this.onlineListener);
    }
    const name = `syncclient-leader:${this.dbName}`;
    const hold = (): Promise<void> =>
      new Promise<void>((resolve) => {
        this.releaseLeader = resolve;
        this.becomeLeader();
      });
    const got = await new Promise<boolean>((resolve, reject) => {
      this.locks
        .request(name, { ifAvailable: true }, async (lock) => {
          resolve(lock !== null);
          if (lock !== null) await hold();
        })
        .catch(reject);
    });
    if (!got) {
      // Queue for the lock: this tab takes over when the leader's tab closes.
      this.locks.request(name, { signal: this.release.signal }, hold).catch(() => undefined);
      this.tabs.post({ kind: "ask" }); // the leader's connection state, without waiting for its next round
    }
  }

  private becomeLeader(): void {
    if (this.closed) {
      this.releaseLeader?.();
      return;
    }
    this.leader = true;
    this.scheduleTokenRefresh();
    this.loopDone = this.loop();
    this.attachments.start(); // uploads run beside the change queue, never in it
  }

  private async loop(): Promise<void> {
    const mode = this.options.transport ?? "auto";
    const interval = this.options.syncIntervalMs ?? 30_000;
    while (!this.closed) {
      this.setConnection("connecting");
      let transport: Transport | null = null;
      let delay: number;
      let error: string;
      try {
        transport = await this.connect(mode);
        this.live = transport;
        for (;;) {
          await this.round(transport);
          if (this.liveUnconfirmed !== null) {
            // HTTP works, WS was refused: set it aside, longer for each refusal in a row.
            this.liveFailedAt = this.liveUnconfirmed;
            this.liveFailures++;
          } else if (transport.name === "ws") {
            this.liveFailures = 0;
          }
          this.liveUnconfirmed = null;
          this.backoff.reset();
          this.refusedInARow = 0;
          this.scheduleTokenRefresh(); // the token may have been fetched (or replaced) in this round
          this.setConnection(transport.name === "ws" ? "live" : "http");
          const untilLive = mode === "auto" && transport.name === "http" ? this.liveDueInMs() : Infinity;
          await this.idle(transport, Math.max(0, Math.min(interval, untilLive)));
          if (this.closed) return;
          if (mode === "auto" && transport.name === "http" && this.liveDue()) break;
        }
        continue;
      } catch (exc) {
        if (this.closed) return;
        if (exc instanceof ServerError && exc.needsToken) {
          // A refused token: ask for a fresh one; retry at once if it changed, but only once in a
          // row, so a server that refuses every token (an unknown tenant) is not hammered.
          const before = this.tokens.peek();
          const fresh = await this.tokens.refresh().catch(() => before);
          delay = fresh !== before && this.refusedInARow === 0 ? 0 : this.delay(exc);
          this.refusedInARow++;
        } else {
          delay = this.delay(exc);
        }
        error = exc instanceof Error ? `${exc.name}: ${exc.message}` : String(exc);
        this.state.lastError = error;
      } finally {
        this.live = null;
        if (transport !== null && transport !== this.http) await transport.close();
      }
      // Nothing reached the server: the live channel was not refused, the network is down.
      this.liveUnconfirmed = null;
      if (delay > 0) {
        this.setConnection("offline", error, delay);
        this.onlineSignal.clear();
        await Promise.race([this.onlineSignal.wait(delay * 1000), this.stopSignal.wait(delay * 1000)]);
        this.onlineSignal.clear();
      }
    }
  }

  private delay(exc: unknown): number {
    if (exc instanceof ServerError) {
      if (exc.retryAfter !== null && (exc.status === 429 || exc.status === 503)) return this.backoff.retryAfter(exc.retryAfter);
      if (!exc.retryable) {
        // A 4xx that does not heal by retrying soon; setToken() or an `online` event cut this wait short.
        this.backoff.next();
        return this.backoff.cap;
      }
    } else if (!(exc instanceof SyncError)) {
      console.error("syncclient: sync failed", exc);
    }
    return this.backoff.next();
  }

  private liveDue(): boolean {
    return this.liveDueInMs() <= 0;
  }

  /** How long until the live channel is tried again: 1 s after a first refusal, 4 times longer per refusal in a row. */
  private liveDueInMs(): number {
    const cap = this.options.liveRetryMs ?? 300_000;
    const aside = this.liveFailures === 0 ? 0 : Math.min(cap, 1000 * 4 ** (this.liveFailures - 1));
    return this.liveFailedAt + aside - Date.now();
  }

  private async connect(mode: "auto" | "ws" | "http"): Promise<Transport> {
    if (mode === "http") return this.http;
    const wsAvailable = this.options.WebSocket !== undefined || "WebSocket" in globalThis;
    if (mode === "auto" && (!wsAvailable || !this.liveDue())) return this.http;
    try {
      return await connectWebSocket({
        url: this.options.url,
        token: await this.tokens.get(),
        replica: this.replicaId,
        cursor: await this.store.cursor(),
        collections: this.options.collections ?? null,
        ...(this.options.WebSocket ? { WebSocket: this.options.WebSocket } : {}),
      });
    } catch (exc) {
      if (mode === "ws" || (exc instanceof ServerError && exc.needsToken)) throw exc;
      // Set aside only if HTTP then reaches the server (a proxy without WebSockets, a connection limit).
      this.liveUnconfirmed = Date.now();
      return this.http;
    }
  }

  /** Wait for a reason to sync again: a local write (debounced), `online`, a live change, the interval. */
  private async idle(transport: Transport, interval: number): Promise<void> {
    const waits: Promise<unknown>[] = [
      this.wakeSignal.wait(interval),
      this.onlineSignal.wait(interval),
      this.stopSignal.wait(interval),
    ];
    if (isLive(transport)) {
      const live = transport.waitForChanges(interval);
      live.catch(() => undefined); // a session that fails after another reason won is seen by the next round
      waits.push(live);
    }
    await Promise.race(waits);
    if (this.wakeSignal.isSet) await new Promise((r) => setTimeout(r, 50)); // gather a burst of writes
    this.wakeSignal.clear();
    this.onlineSignal.clear();
  }

  private setConnection(state: ConnectionState, error: string | null = null, retryIn: number | null = null): void {
    if (state === this.state.connection && state !== "offline") return;
    if (state === "live" || state === "http") this.attachments.wake(); // the network is back: uploads too
    this.emitShared({ type: "connection", state, error, retryIn });
    this.broadcastStatus();
  }

  /**
   * Arm the refresh of the current token a minute before its `exp`. Only a token with another `exp` re-arms
   * the timer (the loop calls this after every round), and one already due when it arrives (a lifetime under
   * a minute, or the stale token a provider hands back offline) waits a retry delay, never 0 ms: a refresh
   * that brings no token good for longer must not spin, calling the provider and waking the loop each time.
   */
  private scheduleTokenRefresh(): void {
    if (this.closed || typeof this.options.token === "string") return;
    const exp = this.tokens.expiry();
    if (exp === this.refreshFor) return; // armed for this token already, or retrying its refresh
    this.refreshFor = exp;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (exp === null) return; // no `exp`: refreshed when the server refuses it
    const due = this.tokens.refreshInMs() ?? 0;
    if (due > 0) this.tokenRetry.reset();
    this.armTokenRefresh(due > 0 ? due : this.tokenRetry.next() * 1000);
  }

  private armTokenRefresh(ms: number): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refreshToken(), Math.min(ms, 2 ** 31 - 1));
  }

  /** The timer fired: ask the provider; a new `exp` re-arms the timer, anything else retries with backoff. */
  private async refreshToken(): Promise<void> {
    this.refreshTimer = undefined;
    const before = this.tokens.peek();
    let token: string | null = null;
    try {
      token = await this.tokens.refresh();
    } catch (exc) {
      this.state.lastError = `token refresh failed: ${String(exc)}`;
    }
    if (this.closed) return;
    if (token !== null && token !== before) await this.useToken(token); // re-arms the timer if its exp is new
    if (this.refreshTimer === undefined && this.tokens.expiry() !== null && !this.closed) {
      this.armTokenRefresh(this.tokenRetry.next() * 1000); // the same token, or none: ask again later
    }
  }

  /** Use a fresh token from now on: on the open live session too, and retry at once if the loop waited. */
  async setToken(token: string): Promise<void> {
    const changed = token !== this.tokens.peek();
    this.tokens.set(token);
    await this.store.setMeta("token", token); // for the service worker's Background Sync
    if (changed) await this.useToken(token);
  }

  /** Only for a token that changed: waking the loop for the same token would retry what just failed. */
  private async useToken(token: string): Promise<void> {
    if (this.live !== null && isLive(this.live)) await this.live.refreshToken(token).catch(() => undefined);
    this.onlineSignal.set();
    if (this.leader) {
      this.scheduleTokenRefresh();
      this.attachments.wake();
    }
  }

  /**
   * Ask the browser to flush the outbox when the network returns, even if the page is
   * closed: registers the Background Sync tag that `registerOutboxSync` (in the service
   * worker) handles. Where Background Sync is missing or refused, or no service worker
   * is active within 5 s, it falls back to an `online` listener that syncs while the
   * page is open.
   */
  async requestBackgroundSync(): Promise<"background-sync" | "online-event"> {
    type SyncRegistration = { sync?: { register(tag: string): Promise<void> } };
    const nav = (globalThis as { navigator?: { serviceWorker?: { ready: Promise<SyncRegistration> } } }).navigator;
    if (nav?.serviceWorker && "SyncManager" in globalThis) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        // `ready` never settles on a page with no service worker (none registered, or its install failed).
        const noWorker = new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), SERVICE_WORKER_READY_MS);
        });
        const registration = await Promise.race([nav.serviceWorker.ready, noWorker]);
        if (registration?.sync) {
          await registration.sync.register(BACKGROUND_SYNC_TAG);
          return "background-sync";
        }
      } catch {
        // permission denied or no active worker: the page-side fallback below
      } finally {
        clearTimeout(timer);
      }
    }
    const g = globalThis as { addEventListener?: (t: string, f: () => void, o?: object) => void };
    g.addEventListener?.(
      "online",
      () => {
        if (this.leader) this.onlineSignal.set();
        else if (!this.closed) void this.sync().catch(() => undefined);
      },
      { once: true },
    );
    return "online-event";
  }

  /** Stop syncing, give up leadership (another tab takes over) and close the database. Queued writes stay. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.refreshTimer);
    this.stopSignal.set();
    this.release.abort();
    if (this.onlineListener) {
      (globalThis as { removeEventListener?: (t: string, f: () => void) => void }).removeEventListener?.(
        "online",
        this.onlineListener,
      );
    }
    await this.live?.close();
    await this.attachments.stop();
    await this.loopDone?.catch(() => undefined);
    this.leader = false;
    this.releaseLeader?.();
    this.watchers.clear();
    this.tabs.close();
    // Let a round that is still running finish its transaction before the database closes.
    await this.locks.request(`syncclient-round:${this.dbName}`, {}, () => undefined).catch(() => undefined);
    this.store.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error("the SyncClient is closed");
  }
}

/** Thrown inside a write whose text already reads what `setText` was given: nothing to queue. */
class Unchanged extends Error {}

/** The change as the server will decode it, or an error now rather than a refused push later. */
function validated(draft: Change): Change {
  const blob = JSON.stringify(draft);
  const change = validateChange(JSON.parse(blob));
  const size = new TextEncoder().encode(blob).length;
  if (size > MAX_CHANGE_BYTES) throw new RangeError(`a change may take at most ${MAX_CHANGE_BYTES} bytes; this one takes ${size}`);
  return change;
}

/** `client.collection("deliveries")`: writes that queue changes, reads that show them at once. Holds no state. */
export class CollectionHandle {
  constructor(
    readonly client: SyncClient,
    readonly name: string,
  ) {}

  /** Write register fields, all in one change applied atomically by the server. */
  set(entity: string, fields: Record<string, Json>): Promise<Change> {
    const ops = Object.entries(fields).map(([field, value]): Op => ({ op: "set", field, value }));
    return this.write(entity, ops);
  }

  /** Add `by` (may be negative) to a counter field. */
  inc(entity: string, field: string, by = 1): Promise<Change> {
    return this.write(entity, [{ op: "inc", field, by }]);
  }

  /** Add elements to a set field (add wins over a concurrent remove). */
  add(entity: string, field: string, ...values: SetElement[]): Promise<Change> {
    return this.write(entity, values.map((value): Op => ({ op: "add", field, value })));
  }

  /** Remove elements, as far as this replica has seen them added. */
  remove(entity: string, field: string, ...values: SetElement[]): Promise<Change> {
    return this.write(entity, values.map((value): Op => ({ op: "remove", field, value })));
  }

  /** Append entries to a log field (for example GPS points). */
  append(entity: string, field: string, ...values: Json[]): Promise<Change> {
    return this.write(entity, values.map((value): Op => ({ op: "append", field, value })));
  }

  /**
   * Edit a text field at code point `pos`: delete `deleteCount` code points, then insert
   * `insert`. The edit is made on the text as this replica sees it now (pending edits
   * included) and queued as a Yjs update. Rejects with RangeError outside the text.
   */
  editText(entity: string, field: string, pos: number, deleteCount = 0, insert = ""): Promise<Change> {
    return this.client.write(this.name, entity, (view) => {
      const current = view?.fields[field];
      if (current !== undefined && current.kind !== "text") {
        throw new TypeError(`${this.name}.${field} is a ${current.kind}, not a text field`);
      }
      return [{ op: "text", field, update: text.splice(current?.update, pos, deleteCount, insert) }];
    });
  }

  /**
   * Make a text field read `value` with the smallest edit: the common prefix and suffix (in code points) of
   * the text as this replica sees it at the moment of the write (pending edits and pulled remote edits
   * included) stay, only the middle is replaced, so no position can be stale. For an input box, pass its
   * whole value and, as `basis`, the text the box last showed: if the text changed since (a remote edit
   * was pulled), the box's edit of `basis` is made on the text as it is now, and the remote edit stays
   * (without `basis`, the text becomes `value`, undoing an edit the box never showed). Resolves with the
   * change, or null when there is nothing to change (nothing queued).
   */
  async setText(entity: string, field: string, value: string, options: { basis?: string } = {}): Promise<Change | null> {
    try {
      return await this.client.write(this.name, entity, (view) => {
        const current = view?.fields[field];
        if (current !== undefined && current.kind !== "text") {
          throw new TypeError(`${this.name}.${field} is a ${current.kind}, not a text field`);
        }
        const now = text.value(current?.update);
        const target = options.basis === undefined ? value : text.merge(options.basis, value, now);
        const edit = text.diff(now, target);
        if (edit === null) throw new Unchanged(); // aborts the transaction
        return [{ op: "text", field, update: text.splice(current?.update, ...edit) }];
      });
    } catch (exc) {
      if (exc instanceof Unchanged) return null;
      throw exc;
    }
  }

  /** Delete the entity (a tombstone; a later update revives it under `update_wins`). */
  delete(entity: string): Promise<Change> {
    return this.write(entity, [{ op: "delete" }]);
  }

  /** Queue one change made of `ops`, applied atomically by the server. */
  write(entity: string, ops: Op[]): Promise<Change> {
    if (!ops.length) return Promise.reject(new RangeError("a change needs at least one op"));
    return this.client.write(this.name, entity, ops);
  }

  /** The entity's field values with pending changes applied; undefined if absent or deleted. */
  async get(entity: string): Promise<Record<string, Json> | undefined> {
    return visible(await this.client.view(this.name, entity));
  }

  /** The optimistic `EntityView` (with `vv`, `deleted` and register `siblings`). */
  view(entity: string): Promise<EntityView | undefined> {
    return this.client.view(this.name, entity);
  }

  /** Every entity that is not deleted, sorted by id, with pending changes applied. */
  async list(): Promise<Row[]> {
    const rows: Row[] = [];
    for (const [entity, view] of await this.client.views(this.name)) {
      const fields = visible(view);
      if (fields) rows.push({ entity, fields });
    }
    return rows;
  }

  /** The register siblings of a field when it holds concurrent values, else []. */
  async siblings(entity: string, field: string): Promise<SiblingView[]> {
    return (await this.view(entity))?.fields[field]?.siblings ?? [];
  }
}
