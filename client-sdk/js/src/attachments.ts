/**
 * Attachments: attach a file offline, upload it in the background with tus-js-client, fetch it on demand
 * (PROTOCOL §10). The browser counterpart of the Python SDK's `syncclient.attachments`.
 *
 * ```ts
 * const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", jpeg, { mediaType: "image/jpeg" });
 * // the Blob and the change holding the reference committed in one IndexedDB transaction
 * client.subscribe((e) => e.type === "attachment_progress" && console.log(e.id, e.sent, e.total));
 * const blob = await client.attachments.fetch(ref); // local copy, cache, or an authorized download
 * ```
 *
 * Uploads run in the tab that leads sync (and in the service worker on Background Sync), one file at a time
 * under the Web Lock `syncclient-uploads:<db>`, so two tabs never send the same bytes. The tus upload URL is
 * kept in IndexedDB: after a reload, a crash or a lost connection the upload resumes from the server's
 * `Upload-Offset`. A refused file (a stable code) is marked `refused`, reported once as an
 * `attachment_rejected` event and never retried; the queue goes on with the next file. Uploads never hold
 * back the change queue: the reference syncs at once and shows `pending` on the server until its bytes arrive.
 *
 * A file attached on another device shows `pending` in pulls until its bytes arrive, and an upload changes no
 * entity, so later pulls do not bring the news. The leader tab asks the server about the ids it holds as
 * `pending` (`POST /v1/attachments/status`, 500 ids per request) after each sync round and then with backoff
 * (2 s doubling to 60 s) while some stay pending; each change is an `attachment` event `{id, status}` (the other
 * tabs hear it over the BroadcastChannel) and `remoteStatus(id)` tells the last status heard (PROTOCOL §10.2).
 *
 * Pitfalls:
 * - `attach` reads the whole Blob to hash it (WebCrypto has no streaming digest); downscale photos first.
 * - `fetch` checks the bytes against the reference's SHA-256 and rejects with `data_integrity` on a mismatch.
 */
import { defaultOptions, Upload, type DetailedError, type HttpStack } from "tus-js-client";

import { ChecksumHttpStack, FetchHttpStack, IdleTimeoutHttpStack } from "./attachments-http.js";
import {
  asAttachmentRef,
  attachmentRef,
  MAX_STATUS_IDS,
  refValue,
  sha256Hex,
  type AttachmentRef,
  type RemoteStatus,
  type UploadState,
} from "./attachments-ref.js";
import { Backoff } from "./backoff.js";
import { ServerError, TransportError } from "./errors.js";
import type { SyncEvent } from "./events.js";
import { Signal } from "./signal.js";
import type { LocalStore, NewUpload, UploadRow } from "./store.js";
import type { LockManagerLike } from "./tabs.js";
import type { TokenSource } from "./token.js";
import type { Change, Json, Op } from "./types.js";

export const UPLOADS_PATH = "/v1/attachments/uploads";
/** Codes that refuse a file for good (PROTOCOL §6): surface them, never retry them. */
export const ATTACHMENT_REFUSALS: ReadonlySet<string> = new Set([
  "attachment_too_large",
  "media_type_not_allowed",
  "attachment_hash_mismatch",
  "attachment_conflict",
]);

export interface AttachOptions {
  /** `type/subtype`, e.g. "image/jpeg" (default: the Blob's own type) */
  mediaType?: string;
  /** the file's name, informative only (default: a File's name) */
  name?: string;
}

/** What `status(id)` tells about one attached file. */
export interface AttachmentStatus {
  id: string;
  state: UploadState;
  /** bytes the server has */
  sent: number;
  total: number;
  code: string | null;
  message: string | null;
}

export interface AttachmentsOptions {
  url: string;
  dbName: string;
  tokens: TokenSource;
  locks: LockManagerLike;
  emit: (event: SyncEvent) => void;
  /** writes the change that holds the reference, with the upload row in the same transaction */
  write: (collection: string, entity: string, ops: Op[], upload: NewUpload) => Promise<Change>;
  fetch?: typeof fetch;
  /** bytes per PATCH (default 1 MiB) */
  chunkSize?: number;
  /** bytes of uploaded and downloaded files kept for reads (default 64 MiB) */
  cacheBytes?: number;
  /**
   * an upload request that makes no progress (no bytes sent, no answer) for this long is aborted and the file
   * retried later with backoff, resuming from the server's offset; the queue goes on meanwhile (default 60 s)
   */
  idleTimeoutMs?: number;
  backoff?: Backoff;
  /** replaces tus-js-client's HTTP stack (default: XMLHttpRequest where there is one, else fetch) */
  httpStack?: HttpStack;
  /** asks the server for the status of up to 500 attachments (`POST /v1/attachments/status`); none: no refresh */
  statusOf?: (ids: string[]) => Promise<Record<string, RemoteStatus>>;
  /** first delay between status refreshes while some are pending, doubling to 60 s (default 2000 ms) */
  statusRefreshMs?: number;
}

/** One attachment whose server status changed. */
export interface RemoteStatusChange {
  id: string;
  status: RemoteStatus;
  previous: RemoteStatus | null;
}

/** A refusal: the file is done with, unlike a transient failure. */
class Refused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Attachments {
  private readonly wakeSignal = new Signal();
  private readonly stopSignal = new Signal();
  private readonly statusSignal = new Signal();
  private readonly backoff: Backoff;
  private readonly statusBackoff: Backoff;
  private statusRunning: Promise<void> | null = null;
  /** Ids the server left out of an answer: not asked again until the next round (it may bring them in scope). */
  private readonly unseen = new Set<string>();
  private readonly httpStack: HttpStack;
  private running: Promise<void> | null = null;
  /** The upload in flight, with a way to settle its promise: tus-js-client's `abort()` never does. */
  private current: { upload: Upload; reject: (exc: Error) => void } | null = null;
  private stopped = false;
  readonly cacheBytes: number;

  constructor(
    private readonly store: LocalStore,
    private readonly options: AttachmentsOptions,
  ) {
    this.backoff = options.backoff ?? new Backoff();
    this.statusBackoff = new Backoff((options.statusRefreshMs ?? 2000) / 1000, 60);
    this.cacheBytes = options.cacheBytes ?? 64 << 20;
    const base =
      options.httpStack ??
      (typeof XMLHttpRequest === "function" && options.fetch === undefined
        ? undefined
        : new FetchHttpStack(options.fetch ?? ((input, init) => fetch(input, init))));
    this.httpStack = new ChecksumHttpStack(new IdleTimeoutHttpStack(base ?? defaultStack(), options.idleTimeoutMs ?? 60_000));
  }

  // --- attaching --------------------------------------------------------------------

  /**
   * Keep `blob` on this device, write its reference into `collection/entity.field` (a register `set`),
   * and queue its upload. Resolves with the reference once the Blob and the change are committed together.
   */
  async attach(collection: string, entity: string, field: string, blob: Blob, options: AttachOptions = {}): Promise<AttachmentRef> {
    const name = options.name ?? (typeof File === "function" && blob instanceof File ? blob.name : undefined);
    const ref = attachmentRef({
      id: crypto.randomUUID(),
      size: blob.size,
      sha256: await sha256Hex(blob),
      media_type: options.mediaType ?? blob.type,
      ...(name ? { name } : {}),
    });
    const upload: NewUpload = {
      id: ref.id,
      ref,
      collection,
      entity,
      field,
      blob,
      state: "queued",
      sent: 0,
      uploadUrl: null,
      code: null,
      message: null,
      queuedAt: Date.now(),
    };
    await this.options.write(collection, entity, [{ op: "set", field, value: refValue(ref) }], upload);
    this.options.emit({ type: "attachment_progress", id: ref.id, state: "queued", sent: 0, total: ref.size });
    this.wake();
    return ref;
  }

  async status(id: string): Promise<AttachmentStatus | undefined> {
    const row = await this.store.upload(id);
    return row && statusOf(row);
  }

  /** Every file attached on this device, oldest first. */
  async list(): Promise<AttachmentStatus[]> {
    return (await this.store.uploads()).map(statusOf);
  }

  /** Files the server refused (kept, bytes and all, until `discard(id)`; events can be missed, this cannot). */
  async refused(): Promise<AttachmentStatus[]> {
    return (await this.list()).filter((s) => s.state === "refused");
  }

  /**
   * Forget a refused file (its bytes leave IndexedDB) or an uploaded one (its status; a cached copy stays in
   * the read cache until evicted, and `fetch` still downloads it). Resolves true if there was one to forget;
   * rejects for a file still queued or uploading, whose reference has synced and whose bytes must follow.
   */
  async discard(id: string): Promise<boolean> {
    return (await this.store.discardUpload(id)) !== undefined;
  }

  // --- statuses on the server --------------------------------------------------------

  /**
   * What the server last said of an attachment a pulled entity references: `pending`, `available` or
   * `refused`; undefined if no pulled entity references it (a file attached here and not yet pulled back).
   */
  remoteStatus(id: string): Promise<RemoteStatus | undefined> {
    return this.store.remoteStatus(id);
  }

  /**
   * Ask the server now about every id held as `pending`; store and emit (`attachment` events) what changed.
   * An id the server leaves out (no longer visible to this token) is forgotten. Rejects like a sync.
   */
  async refreshStatuses(): Promise<RemoteStatusChange[]> {
    const ask = this.options.statusOf;
    if (ask === undefined) return [];
    const pending = await this.toAsk();
    const changed: RemoteStatusChange[] = [];
    for (let i = 0; i < pending.length; i += MAX_STATUS_IDS) {
      const batch = pending.slice(i, i + MAX_STATUS_IDS);
      const heard = await ask(batch);
      const gone = batch.filter((id) => !Object.hasOwn(heard, id));
      for (const id of gone) this.unseen.add(id);
      const found = await this.store.setRemoteStatuses(heard, gone);
      for (const change of found) {
        changed.push(change);
        this.options.emit({ type: "attachment", ...change });
      }
    }
    return changed;
  }

  /** A sync round ended (in the leader): refresh now, and restart the backoff at its first step. */
  async afterRound(): Promise<void> {
    this.unseen.clear();
    this.statusBackoff.reset();
    this.statusSignal.set();
    try {
      await this.refreshStatuses();
    } catch {
      // offline or refused: the background refresh tries again with backoff
    }
  }

  private async toAsk(): Promise<string[]> {
    return (await this.store.pendingAttachments()).filter((id) => !this.unseen.has(id));
  }

  private async statusLoop(): Promise<void> {
    while (!this.stopped) {
      this.statusSignal.clear();
      const pending = (await this.toAsk().catch(() => [])).length > 0;
      const waitMs = pending ? this.statusBackoff.next() * 1000 : 10 * 60_000; // nothing pending: until a round
      const woken = await Promise.race([this.statusSignal.wait(waitMs), this.stopSignal.wait(waitMs)]);
      if (woken || !pending) continue; // a round just refreshed (or stop)
      try {
        await this.refreshStatuses();
      } catch (exc) {
        if (exc instanceof ServerError && exc.retryAfter !== null) {
          const ms = this.statusBackoff.retryAfter(exc.retryAfter) * 1000;
          await Promise.race([this.statusSignal.wait(ms), this.stopSignal.wait(ms)]);
        }
      }
    }
  }

  // --- fetching ---------------------------------------------------------------------

  /**
   * The file's bytes: this device's copy (not yet uploaded), the cache, or a download with the bearer
   * token (checked against the reference's SHA-256, then cached). Accepts a reference or the register value
   * that holds one. Rejects with `ServerError` (404 `not_found` while the server has no verified bytes this
   * token may read) or `TransportError`.
   */
  async fetch(reference: AttachmentRef | Json): Promise<Blob> {
    const ref =
      asAttachmentRef(reference) ??
      (typeof reference === "object" && reference !== null ? asAttachmentRef(refValue(reference as AttachmentRef)) : null);
    if (ref === null) throw new TypeError("not an attachment reference");
    const own = await this.store.upload(ref.id);
    if (own?.blob) return own.blob;
    const cached = await this.store.cachedBlob(ref.id);
    if (cached) return cached;
    const blob = await this.download(ref);
    await this.store.cacheBlob(ref.id, blob, this.cacheBytes);
    return blob;
  }

  private async download(ref: AttachmentRef): Promise<Blob> {
    const url = `${this.options.url.replace(/\/$/, "")}/v1/attachments/${encodeURIComponent(ref.id)}`;
    const get = async (): Promise<Response> => {
      try {
        return await (this.options.fetch ?? fetch)(url, { headers: { Authorization: `Bearer ${await this.options.tokens.get()}` } });
      } catch (exc) {
        throw new TransportError(`GET ${url}: ${String(exc)}`);
      }
    };
    let response = await get();
    if (response.status === 401) {
      await this.options.tokens.refresh();
      response = await get();
    }
    if (response.status !== 200) {
      const [code, message] = errorOf(response.status, await response.text());
      throw new ServerError(response.status, code, message);
    }
    const bytes = await response.arrayBuffer();
    const blob = new Blob([bytes], { type: ref.media_type });
    if (blob.size !== ref.size || (await sha256Hex(blob)) !== ref.sha256) {
      throw new ServerError(500, "data_integrity", "downloaded bytes do not match the reference's size and SHA-256");
    }
    return blob;
  }

  // --- uploading --------------------------------------------------------------------

  /**
   * Upload every queued file once, in order, one at a time (under the uploads lock shared with other tabs
   * and the service worker). A refused file is marked and skipped. Rejects after trying all of them if any
   * failed for a transient reason (offline, 5xx), so the caller retries later; what was sent stays sent.
   */
  async uploadPending(): Promise<AttachmentStatus[]> {
    // The browser knows it is offline: no attempt, no state flapping; the `online` event wakes the loop.
    if ((globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false) {
      throw new TransportError("offline");
    }
    return this.options.locks.request(`syncclient-uploads:${this.options.dbName}`, {}, async () => {
      const done: AttachmentStatus[] = [];
      let failure: Error | null = null;
      for (const row of await this.store.uploads()) {
        if (this.stopped) break;
        if (row.state !== "queued" && row.state !== "uploading") continue;
        try {
          done.push(await this.uploadOne(row));
        } catch (exc) {
          failure ??= exc instanceof Error ? exc : new Error(String(exc));
        }
      }
      if (failure !== null) throw failure;
      return done;
    });
  }

  private async uploadOne(row: UploadRow): Promise<AttachmentStatus> {
    if (!row.blob) throw new Error(`attachment ${row.id} has no local bytes`); // cannot happen: they leave only when uploaded
    const fresh = await this.store.updateUpload(row.id, { state: "uploading" });
    this.progress(fresh ?? row);
    try {
      await this.tus(row, row.blob);
    } catch (exc) {
      if (!(exc instanceof Refused)) {
        const back = await this.store.updateUpload(row.id, { state: "queued" });
        this.progress(back ?? row);
        throw exc;
      }
      const refused = await this.store.updateUpload(row.id, { state: "refused", code: exc.code, message: exc.message });
      this.progress(refused ?? row);
      this.options.emit({
        type: "attachment_rejected",
        id: row.id,
        collection: row.collection,
        entity: row.entity,
        field: row.field,
        code: exc.code,
        message: exc.message,
      });
      return statusOf(refused ?? row);
    }
    await this.store.uploaded(row.id, this.cacheBytes);
    const done = (await this.store.upload(row.id)) ?? row;
    this.progress(done);
    return statusOf(done);
  }

  private progress(row: UploadRow): void {
    this.options.emit({ type: "attachment_progress", id: row.id, state: row.state, sent: row.sent, total: row.ref.size });
  }

  /** One tus-js-client run: resume from the kept upload URL (HEAD), or create the upload. */
  private async tus(row: UploadRow, blob: Blob): Promise<void> {
    const base = this.options.url.replace(/\/$/, "");
    let refreshed = false;
    for (;;) {
      try {
        await this.tusOnce(row, blob, base);
        return;
      } catch (exc) {
        const status = (exc as DetailedError).originalResponse?.getStatus() ?? 0;
        const body = (exc as DetailedError).originalResponse?.getBody() ?? "";
        const [code, message] = errorOf(status, body);
        if (ATTACHMENT_REFUSALS.has(code)) throw new Refused(code, message);
        if (status === 401 && !refreshed) {
          refreshed = true;
          await this.options.tokens.refresh();
          continue;
        }
        if (status === 0) throw new TransportError(`upload ${row.id}: ${exc instanceof Error ? exc.message : String(exc)}`);
        throw new ServerError(status, code, message);
      }
    }
  }

  private tusOnce(row: UploadRow, blob: Blob, base: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.stopped) {
        reject(new TransportError("upload stopped")); // stop() came while this file was being prepared
        return;
      }
      const upload: Upload = new Upload(blob, {
        endpoint: base + UPLOADS_PATH,
        uploadUrl: row.uploadUrl,
        uploadSize: row.ref.size,
        metadata: { id: row.ref.id, sha256: row.ref.sha256, media_type: row.ref.media_type },
        chunkSize: this.options.chunkSize ?? 1 << 20,
        // The first chunk rides on the creation (tus creation-with-upload): a signature or a photo of one
        // chunk is one request, one round trip less on a slow mobile link. A resumed upload (uploadUrl
        // kept) asks HEAD instead and sends nothing twice.
        uploadDataDuringCreation: true,
        retryDelays: null, // the queue retries with its own backoff, and goes on with the next file meanwhile
        storeFingerprintForResuming: false, // we keep the URL ourselves, in IndexedDB with the bytes
        httpStack: this.httpStack,
        onBeforeRequest: async (req) => {
          req.setHeader("Authorization", `Bearer ${await this.options.tokens.get()}`);
        },
        onUploadUrlAvailable: () => {
          if (upload.url && upload.url !== row.uploadUrl) {
            row.uploadUrl = upload.url;
            void this.store.updateUpload(row.id, { uploadUrl: upload.url });
          }
        },
        onChunkComplete: (_size, accepted, total) => {
          row.sent = accepted;
          void this.store.updateUpload(row.id, { sent: accepted });
          this.options.emit({ type: "attachment_progress", id: row.id, state: "uploading", sent: accepted, total });
        },
        onSuccess: () => {
          this.current = null;
          resolve();
        },
        onError: (error) => {
          this.current = null;
          reject(error);
        },
      });
      this.current = { upload, reject };
      upload.start();
    });
  }

  // --- background -------------------------------------------------------------------

  /** Upload in the background until `stop()`: now, after each `wake()` and with backoff after a failure. */
  start(): void {
    if (this.running !== null) return;
    this.stopped = false;
    this.running = this.loop();
    if (this.options.statusOf !== undefined) this.statusRunning = this.statusLoop();
  }

  /** Try now (a new file, the network is back, another tab attached something). */
  wake(): void {
    this.wakeSignal.set();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal.set();
    // Abort the request in flight without waiting on it (an aborted request may never settle), and settle
    // its upload ourselves, so the loop ends and the uploads lock is released: another tab takes over.
    const current = this.current;
    this.current = null;
    if (current !== null) {
      current.upload.abort().catch(() => undefined);
      current.reject(new TransportError("upload stopped"));
    }
    await this.running?.catch(() => undefined);
    await this.statusRunning?.catch(() => undefined);
    this.running = null;
    this.statusRunning = null;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      this.wakeSignal.clear();
      let waitMs = 10 * 60_000; // nothing queued: sleep until woken
      try {
        await this.uploadPending();
        this.backoff.reset();
      } catch (exc) {
        if (exc instanceof ServerError && !exc.retryable && !exc.needsToken && exc.status !== 409 && exc.status !== 460) {
          console.error("syncclient: attachment upload failed", exc);
        }
        waitMs = this.backoff.next() * 1000;
      }
      await Promise.race([this.wakeSignal.wait(waitMs), this.stopSignal.wait(waitMs)]);
    }
  }
}

function statusOf(row: UploadRow): AttachmentStatus {
  return { id: row.id, state: row.state, sent: row.sent, total: row.ref.size, code: row.code, message: row.message };
}

/** The stable code and message of an error body (PROTOCOL §6), or `http_<status>`. */
function errorOf(status: number, body: string): [string, string] {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.code === "string") {
      return [parsed.error.code, typeof parsed.error.message === "string" ? parsed.error.message : ""];
    }
  } catch {
    // not protocol JSON
  }
  return [`http_${status}`, body.slice(0, 200)];
}

/** tus-js-client's browser default: XMLHttpRequest, with progress within a chunk. */
function defaultStack(): HttpStack {
  return defaultOptions.httpStack;
}
