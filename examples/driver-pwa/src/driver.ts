// The driver's app: today's stops, each with status, cash on delivery, parcel scans, notes and a GPS trail.
// Every action is written to the SDK's IndexedDB outbox first (it survives reloads, closed tabs and crashes)
// and synced whenever there is a network; the bar at the top always says how many are still waiting.
import { SyncClient, type AttachmentRef, type AttachmentStatus } from "@syncserver/client";

import { attachmentUrl, downscale, refOf, SignaturePad } from "./pod";
import {
  type AppConfig,
  bindSyncBar,
  h,
  loadConfig,
  money,
  paced,
  registerServiceWorker,
  statusLabel,
  tokenProvider,
} from "./shared";

type Fields = Record<string, unknown>;
type Row = { entity: string; fields: Fields };
type Deliveries = ReturnType<SyncClient["collection"]>;

const main = document.getElementById("main")!;
const toastBox = document.getElementById("toast")!;

function toast(message: string, kind: "info" | "error" = "info"): void {
  toastBox.textContent = message;
  toastBox.dataset.kind = kind;
  toastBox.hidden = false;
  clearTimeout(Number(toastBox.dataset.timer));
  toastBox.dataset.timer = String(setTimeout(() => (toastBox.hidden = true), 3000));
}

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function num(value: unknown): number {
  return typeof value === "number" ? value : 0;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

const STATE_LABELS: Record<string, string> = {
  queued: "Saved on this phone · waiting to upload",
  uploading: "Uploading",
  uploaded: "Uploaded",
  refused: "Refused by the server",
};

/**
 * One attached file on the delivery screen (`pod_photo` or `pod_signature`): its thumbnail, read from this
 * phone's copy, and its upload state, kept current by the SDK's `attachment_progress` events.
 */
class AttachmentSlot {
  readonly el: HTMLElement;
  private readonly img = h("img", { alt: "", hidden: true });
  private readonly empty: HTMLElement;
  private readonly state = h("span", { class: "pod-state" });
  private readonly bar = h("span", { class: "pod-bar" });
  private ref: AttachmentRef | null = null;

  constructor(
    readonly client: SyncClient,
    readonly field: string,
    emptyText: string,
  ) {
    this.empty = h("span", { class: "pod-empty" }, emptyText);
    this.el = h(
      "div",
      { class: "pod-slot", id: field.replace("_", "-"), "data-state": "none" },
      h("div", { class: "thumb" }, this.img, this.empty),
      h("div", { class: "pod-meta" }, this.state, h("span", { class: "pod-track" }, this.bar)),
    );
  }

  show(value: unknown): void {
    const ref = refOf(value);
    if (ref?.id === this.ref?.id) return;
    this.ref = ref;
    this.el.dataset.id = ref?.id ?? "";
    if (!ref) return;
    void attachmentUrl(this.client, ref).then((url) => {
      if (url && this.ref?.id === ref.id) {
        this.img.src = url;
        this.img.hidden = false;
        this.empty.hidden = true;
      }
    });
    void this.client.attachments.status(ref.id).then((s) => this.progress(s ?? null));
  }

  progress(s: AttachmentStatus | { id: string; state: string; sent: number; total: number; code?: string | null } | null): void {
    if (!this.ref || (s && s.id !== this.ref.id)) return;
    // Attached on another device: this phone has no upload of it, the server has it or will.
    const state = s?.state ?? "remote";
    this.el.dataset.state = state;
    const pct = s && s.total > 0 ? Math.floor((100 * s.sent) / s.total) : state === "uploaded" ? 100 : 0;
    this.bar.style.width = `${state === "uploaded" ? 100 : pct}%`;
    let text = STATE_LABELS[state] ?? "Attached on another device";
    if (state === "uploading") text += ` ${pct}%`;
    if (state === "uploaded") text += " ✓";
    if (state === "refused" && s?.code) text += `: ${s.code}`;
    this.state.textContent = text;
  }
}

/**
 * Where a caret at `caret` (UTF-16, as `selectionStart`) of `before` belongs in `after`, `before` with one
 * edit: unchanged before the edit, shifted by its length after it, at its end inside it.
 */
export function moveCaret(before: string, after: string, caret: number): number {
  let p = 0;
  while (p < before.length && p < after.length && before[p] === after[p]) p++;
  let s = 0;
  while (s < before.length - p && s < after.length - p && before[before.length - 1 - s] === after[after.length - 1 - s]) s++;
  if (caret <= p) return caret;
  if (caret >= before.length - s) return caret + after.length - before.length;
  return after.length - s;
}

class DriverApp {
  private rows: Row[] = [];
  private detail: { entity: string; update: (fields: Fields) => void; stop: () => void } | null = null;
  private backgroundSyncRequested = false;

  constructor(
    readonly client: SyncClient,
    readonly driver: string,
    readonly deliveries: Deliveries,
  ) {}

  start(): void {
    this.client.watch(
      paced(() => this.deliveries.list()),
      (rows) => {
        this.rows = (rows as Row[]).filter((r) => r.fields.driver_id === this.driver);
        this.rows.sort((a, b) => num(a.fields.stop) - num(b.fields.stop) || a.entity.localeCompare(b.entity));
        this.render();
      },
    );
    addEventListener("hashchange", () => this.render());
    addEventListener("online", () => (this.backgroundSyncRequested = false));
    this.client.subscribe((event) => {
      if (event.type === "rejected") toast("The server refused a change: see the dispatcher", "error");
      if (event.type === "attachment_rejected") toast(`The server refused a ${event.field.replace("pod_", "")}: ${event.code}`, "error");
    });
    this.render();
  }

  /** Runs one user action; offline, asks the service worker (once per outage) to flush the outbox on reconnect. */
  async act(what: () => Promise<unknown>): Promise<void> {
    try {
      await what();
      if (this.client.status().connection !== "live" && !this.backgroundSyncRequested) {
        this.backgroundSyncRequested = true;
        await this.client.requestBackgroundSync();
      }
    } catch (err) {
      toast(`Not saved: ${err instanceof Error ? err.message : String(err)}`, "error");
    }
  }

  render(): void {
    const entity = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const row = this.rows.find((r) => r.entity === entity);
    if (row) {
      if (this.detail?.entity !== entity) this.showDetail(entity);
      this.detail!.update(row.fields);
      return;
    }
    this.detail?.stop();
    this.detail = null;
    this.showList();
  }

  showList(): void {
    const done = this.rows.filter((r) => r.fields.status === "delivered" || r.fields.status === "failed").length;
    const cash = this.rows.reduce((sum, r) => sum + num(r.fields.cod_cents), 0);
    main.replaceChildren(
      h(
        "section",
        { class: "summary" },
        h("div", {}, h("strong", { id: "done-count" }, `${done}/${this.rows.length}`), h("span", {}, "stops done")),
        h("div", {}, h("strong", { id: "cash-total" }, money(cash)), h("span", {}, "cash collected")),
      ),
      h("h1", { class: "section-title" }, "Today's stops"),
      this.rows.length === 0
        ? h("p", { class: "empty" }, "No deliveries yet. They appear here as soon as the dispatcher assigns them.")
        : h(
            "ol",
            { class: "stops", id: "stops" },
            ...this.rows.map((r) => {
              const f = r.fields;
              const parcels = list(f.parcels);
              const scanned = list(f.scanned);
              const due = num(f.cod_due_cents);
              return h(
                "li",
                { class: "stop", "data-entity": r.entity },
                h(
                  "a",
                  { href: `#/${encodeURIComponent(r.entity)}` },
                  h("span", { class: "stop-no" }, num(f.stop) || "•"),
                  h(
                    "div",
                    { class: "stop-main" },
                    h("div", { class: "stop-head" }, h("strong", {}, str(f.customer) || r.entity), badge(f.status)),
                    h("div", { class: "muted" }, str(f.address)),
                    h(
                      "div",
                      { class: "chips" },
                      h("span", { class: "chip" }, `${scanned.length}/${parcels.length} scanned`),
                      due > 0 ? h("span", { class: "chip cash" }, `Cash ${money(num(f.cod_cents))} of ${money(due)}`) : null,
                      list(f.trail).length > 0 ? h("span", { class: "chip" }, `${list(f.trail).length} GPS points`) : null,
                      refOf(f.pod_photo) || refOf(f.pod_signature)
                        ? h("span", { class: "chip pod-chip" }, [refOf(f.pod_photo) && "photo", refOf(f.pod_signature) && "signed"].filter(Boolean).join(" · "))
                        : null,
                    ),
                  ),
                ),
              );
            }),
          ),
    );
  }

  showDetail(entity: string): void {
    this.detail?.stop();
    const d = this.deliveries;
    let fields: Fields = {};
    const title = h("h1", { class: "detail-title" });
    const address = h("p", { class: "muted" });
    const status = h("span", { id: "status" });
    const due = h("span");
    const collected = h("strong", { id: "cod" });
    const amount = h("input", {
      id: "cod-amount",
      type: "number",
      inputmode: "decimal",
      min: "0",
      step: "0.01",
      placeholder: "Amount",
      "aria-label": "Cash amount (AED)",
    });
    const parcelList = h("ul", { class: "parcels", id: "parcels" });
    const scanInput = h("input", {
      id: "scan-code",
      placeholder: "Parcel code",
      autocapitalize: "characters",
      "aria-label": "Parcel code",
    });
    const notes = h("textarea", { id: "notes", rows: 3, placeholder: "Gate code, where you left it…", "aria-label": "Notes" });
    const trailInfo = h("p", { class: "muted", id: "trail" });
    const shareToggle = h("input", { type: "checkbox", id: "share-location" });
    const photo = new AttachmentSlot(this.client, "pod_photo", "No photo yet");
    const signature = new AttachmentSlot(this.client, "pod_signature", "Not signed yet");
    const takePhoto = h("label", { class: "button pod-take", for: "pod-photo-input" }, "Take photo");
    const photoInput = h("input", {
      id: "pod-photo-input",
      type: "file",
      accept: "image/*",
      capture: "environment",
      class: "visually-hidden",
    });
    photoInput.addEventListener("change", () => {
      const file = photoInput.files?.[0];
      photoInput.value = "";
      if (!file) return;
      void this.act(async () => {
        const jpeg = await downscale(file);
        await this.client.attachments.attach("deliveries", entity, "pod_photo", jpeg, {
          mediaType: "image/jpeg",
          name: file.name.replace(/\.[^.]*$/, "") + ".jpg",
        });
      });
    });
    const saveSignature = h("button", { id: "signature-save", disabled: true }, "Save signature");
    const pad = new SignaturePad((empty) => (saveSignature.disabled = empty));
    saveSignature.addEventListener("click", () => {
      if (pad.empty) return;
      void this.act(async () => {
        await this.client.attachments.attach("deliveries", entity, "pod_signature", await pad.blob(), {
          mediaType: "image/png",
          name: "signature.png",
        });
        pad.clear();
      });
    });
    const unsubscribe = this.client.subscribe((event) => {
      if (event.type !== "attachment_progress") return;
      photo.progress(event);
      signature.progress(event);
    });
    let watchId: number | null = null;
    // The SDK's text the notes box last showed: the box is that plus what the driver typed since.
    let notesShown = "";
    let notesChain: Promise<void> = Promise.resolve();

    const addPoint = (pos: GeolocationPosition) => {
      const last = list(fields.trail).at(-1) as { lat?: number; lon?: number } | undefined;
      const { latitude: lat, longitude: lon, accuracy } = pos.coords;
      if (watchId !== null && last && last.lat === lat && last.lon === lon) return;
      void this.act(() =>
        d.append(entity, "trail", { lat, lon, acc: Math.round(accuracy), at: Math.round(pos.timestamp) }),
      );
    };
    const geoError = (err: GeolocationPositionError) => toast(`No position: ${err.message}`, "error");

    const scan = () => {
      const code = scanInput.value.trim().toUpperCase();
      if (!code) return;
      scanInput.value = "";
      void this.act(() => d.add(entity, "scanned", code));
    };

    main.replaceChildren(
      h("a", { href: "#/", class: "back" }, "‹ All stops"),
      h("section", { class: "card" }, h("div", { class: "stop-head" }, title, status), address),
      h(
        "section",
        { class: "card actions" },
        h(
          "button",
          {
            class: "big ok",
            id: "mark-delivered",
            onclick: () => void this.act(() => d.set(entity, { status: "delivered" })),
          },
          "✓ Delivered",
        ),
        h(
          "button",
          { class: "big bad", id: "mark-failed", onclick: () => void this.act(() => d.set(entity, { status: "failed" })) },
          "✕ Failed",
        ),
      ),
      h(
        "section",
        { class: "card pod", id: "pod" },
        h("h2", {}, "Proof of delivery"),
        h(
          "div",
          { class: "pod-grid" },
          h("div", {}, photo.el, takePhoto, photoInput),
          h("div", {}, signature.el),
        ),
        h("p", { class: "hint" }, "Customer signs below"),
        pad.canvas,
        h(
          "div",
          { class: "row pod-actions" },
          h("button", { class: "link", id: "signature-clear", onclick: () => pad.clear() }, "Clear"),
          saveSignature,
        ),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Cash on delivery"),
        h("p", {}, collected, " collected of ", due),
        h(
          "form",
          {
            class: "row",
            onsubmit: (e: Event) => {
              e.preventDefault();
              const cents = Math.round(Number(amount.value) * 100);
              if (!Number.isFinite(cents) || cents === 0) return;
              amount.value = "";
              void this.act(() => d.inc(entity, "cod_cents", cents));
            },
          },
          amount,
          h("button", { type: "submit", id: "collect" }, "Collect"),
        ),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Parcels"),
        parcelList,
        h(
          "form",
          {
            class: "row",
            onsubmit: (e: Event) => {
              e.preventDefault();
              scan();
            },
          },
          scanInput,
          h("button", { type: "submit", id: "scan" }, "Scan"),
        ),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Notes"),
        notes,
        h("p", { class: "hint" }, "Saved on this phone as you type; the dispatcher sees them after the next sync."),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "GPS trail"),
        trailInfo,
        h(
          "div",
          { class: "row" },
          h(
            "button",
            {
              id: "add-position",
              onclick: () =>
                navigator.geolocation.getCurrentPosition(addPoint, geoError, { enableHighAccuracy: true, timeout: 10_000 }),
            },
            "Add my position",
          ),
          h("label", { class: "switch" }, shareToggle, " Share while here"),
        ),
      ),
    );

    // One step at a time, for a keystroke or a remote change: write what the driver typed (the SDK makes
    // the edit of `notesShown` on its text as it is now, so a remote edit pulled meanwhile stays and no
    // position is stale), then show the SDK's text, the caret kept, unless the driver typed on meanwhile.
    const syncNotes = () => {
      notesChain = notesChain.then(async () => {
        const value = notes.value;
        if (value !== notesShown) await this.act(() => d.setText(entity, "notes", value, { basis: notesShown }));
        const now = str((await d.get(entity).catch(() => undefined))?.notes);
        if (notes.value !== value) {
          notesShown = value; // the next keystroke's step writes from here, onto the SDK's text
          return;
        }
        notesShown = now;
        if (now === value) return;
        const [start, end] = [notes.selectionStart, notes.selectionEnd];
        notes.value = now;
        if (document.activeElement === notes) notes.setSelectionRange(moveCaret(value, now, start), moveCaret(value, now, end));
      });
    };
    notes.addEventListener("input", syncNotes);
    shareToggle.addEventListener("change", () => {
      if (shareToggle.checked) {
        watchId = navigator.geolocation.watchPosition(addPoint, geoError, { enableHighAccuracy: true });
      } else if (watchId !== null) {
        navigator.geolocation.clearWatch(watchId);
        watchId = null;
      }
    });

    const update = (next: Fields) => {
      fields = next;
      title.textContent = str(next.customer) || entity;
      address.textContent = str(next.address);
      status.replaceChildren(badge(next.status));
      photo.show(next.pod_photo);
      takePhoto.textContent = refOf(next.pod_photo) ? "Retake photo" : "Take photo";
      signature.show(next.pod_signature);
      collected.textContent = money(num(next.cod_cents));
      due.textContent = money(num(next.cod_due_cents));
      const scanned = new Set(list(next.scanned).map(String));
      const expected = list(next.parcels).map(String);
      const extra = [...scanned].filter((p) => !expected.includes(p));
      parcelList.replaceChildren(
        ...[...expected, ...extra].map((code) =>
          h(
            "li",
            { class: scanned.has(code) ? "scanned" : "", "data-code": code },
            h("span", {}, scanned.has(code) ? "✓ " : "○ ", code),
            scanned.has(code)
              ? h(
                  "button",
                  {
                    class: "link",
                    "aria-label": `Unscan ${code}`,
                    onclick: () => void this.act(() => d.remove(entity, "scanned", code)),
                  },
                  "undo",
                )
              : null,
          ),
        ),
      );
      const trail = list(next.trail) as { lat: number; lon: number }[];
      const last = trail.at(-1);
      trailInfo.textContent = last
        ? `${trail.length} point${trail.length === 1 ? "" : "s"} · last ${last.lat.toFixed(5)}, ${last.lon.toFixed(5)}`
        : "No points yet.";
      if (str(next.notes) !== notesShown) syncNotes();
    };
    this.detail = {
      entity,
      update,
      stop: () => {
        unsubscribe();
        if (watchId !== null) navigator.geolocation.clearWatch(watchId);
      },
    };
    scrollTo(0, 0);
  }
}

export function badge(status: unknown): HTMLElement {
  return h("span", { class: `badge s-${String(status ?? "none")}` }, statusLabel(status));
}

function signIn(config: AppConfig): void {
  main.replaceChildren(
    h(
      "section",
      { class: "card signin" },
      h("h1", {}, "Who's driving today?"),
      h("p", { class: "muted" }, "Pick your driver id. Your deliveries stay on this phone and sync when there is signal."),
      ...config.drivers.map((id) =>
        h("a", { class: "button big", href: `/?driver=${encodeURIComponent(id)}` }, `Start as ${id}`),
      ),
      h("p", { class: "muted" }, h("a", { href: "/dispatcher.html" }, "Dispatcher console ›")),
    ),
  );
}

async function boot(): Promise<void> {
  const config = await loadConfig();
  const fromUrl = new URLSearchParams(location.search).get("driver");
  if (fromUrl) localStorage.setItem("pwa:driver", fromUrl);
  const driver = localStorage.getItem("pwa:driver");
  if (!driver) return signIn(config);
  document.getElementById("who")!.textContent = driver;
  document.getElementById("sign-out")!.hidden = false;
  document.getElementById("sign-out")!.addEventListener("click", () => {
    localStorage.removeItem("pwa:driver");
    location.href = "/";
  });
  const dbName = `driver-pwa:${driver}`;
  const client = await SyncClient.open({
    url: config.syncUrl,
    token: tokenProvider("driver", driver),
    dbName,
    schema: config.schema,
  });
  const app = new DriverApp(client, driver, client.collection("deliveries"));
  // Handle for the end-to-end tests and benchmarks (they drive the SDK directly for bulk writes).
  (globalThis as unknown as { driverApp: DriverApp }).driverApp = app;
  bindSyncBar(client);
  app.start();
  await registerServiceWorker(config.syncUrl, dbName).catch((err) => console.warn("service worker", err));
  await client.start();
  document.body.dataset.ready = "1";
}

boot().catch((err: unknown) => {
  main.replaceChildren(h("section", { class: "card" }, h("h1", {}, "Can't start"), h("p", {}, String(err))));
});
