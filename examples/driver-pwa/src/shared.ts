// What both pages share: the app's config, the token provider, the sync-state bar and a tiny DOM helper.
import type { Schema, SyncClient } from "@syncserver/client";

export interface AppConfig {
  syncUrl: string;
  tenant: string;
  drivers: string[];
  /** the server's collection schema, so optimistic reads pick register values by the server's rules */
  schema: Schema;
}

export type Role = "driver" | "dispatcher";

/** The backend's `/config.json`, or the last copy when offline (the service worker caches it too). */
export async function loadConfig(): Promise<AppConfig> {
  try {
    const r = await fetch("/config.json", { cache: "no-cache" });
    if (r.ok) {
      const config = (await r.json()) as AppConfig;
      localStorage.setItem("pwa:config", JSON.stringify(config));
      return config;
    }
  } catch {
    // offline: fall through to the saved copy
  }
  const saved = localStorage.getItem("pwa:config");
  if (saved) return JSON.parse(saved) as AppConfig;
  throw new Error("The app has never been online: connect once to set it up.");
}

/**
 * The SDK's token provider. It asks the app's backend for a fresh short-lived token (here the dev-only
 * `POST /dev/token`; a real backend checks its own session first). Offline, it returns the last token it
 * got, so the app starts with no network; the SDK asks again when the server says the token expired.
 */
export function tokenProvider(role: Role, sub: string): () => Promise<string> {
  const key = `pwa:token:${role}:${sub}`;
  return async () => {
    try {
      const r = await fetch("/dev/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ role, sub }),
        cache: "no-store",
      });
      if (r.ok) {
        const { token } = (await r.json()) as { token: string };
        localStorage.setItem(key, token);
        return token;
      }
    } catch {
      // offline
    }
    const saved = localStorage.getItem(key);
    if (saved) return saved;
    throw new Error("no token yet: connect once to sign in");
  };
}

/**
 * A `client.watch` query that leaves room for writes: each run first waits `minMs`, or twice as long as the
 * last run took. The SDK never overlaps runs and re-runs once after a burst, so a driver recording hundreds of
 * actions offline (a reading of the whole outbox per run) re-renders a few times a second, not after each write.
 */
export function paced<T>(query: () => Promise<T>, minMs = 60): () => Promise<T> {
  let lastMs = 0;
  return async () => {
    await new Promise((resolve) => setTimeout(resolve, Math.max(minMs, 2 * lastMs)));
    const started = performance.now();
    try {
      return await query();
    } finally {
      lastMs = performance.now() - started;
    }
  };
}

type Child = Node | string | number | null | undefined | false;

/** `h("button", {class: "primary", onclick}, "Save")`: attributes starting with "on" are listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, unknown> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value as EventListener);
    } else if (name === "value" && "value" in el) {
      (el as HTMLInputElement).value = String(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function money(cents: number): string {
  return `AED ${(cents / 100).toFixed(2)}`;
}

export const STATUS_LABELS: Record<string, string> = {
  pending: "Pending",
  out_for_delivery: "Out for delivery",
  delivered: "Delivered",
  failed: "Failed",
};

export function statusLabel(status: unknown): string {
  return STATUS_LABELS[String(status)] ?? String(status ?? "—");
}

export function ago(ms: number | null): string {
  if (ms === null) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

const CONNECTION_LABELS: Record<string, string> = {
  live: "Live",
  http: "Online",
  connecting: "Connecting…",
  offline: "Offline",
};

/**
 * Keeps the always-visible sync bar true: connection state, the outbox count (changes saved on this
 * phone but not yet on the server) and when the last sync finished. Updated on every SDK event and
 * once a second (for "x s ago").
 */
export function bindSyncBar(client: SyncClient): () => void {
  const bar = document.getElementById("sync")!;
  const label = document.getElementById("sync-label")!;
  const outbox = document.getElementById("outbox")!;
  const detail = document.getElementById("sync-detail");
  const update = () => {
    const s = client.status();
    const online = navigator.onLine;
    const connection = online ? s.connection : "offline";
    bar.dataset.connection = connection;
    bar.dataset.outbox = String(s.outbox);
    label.textContent = CONNECTION_LABELS[connection] ?? connection;
    outbox.textContent = String(s.outbox);
    outbox.title = s.outbox === 1 ? "1 change waiting to sync" : `${s.outbox} changes waiting to sync`;
    if (detail) {
      detail.textContent =
        s.outbox > 0
          ? `${s.outbox} change${s.outbox === 1 ? "" : "s"} saved on this device, waiting to sync`
          : `All changes synced · ${ago(s.lastSyncAt)}`;
    }
  };
  const unsubscribe = client.subscribe(update);
  const timer = setInterval(update, 1000);
  addEventListener("online", update);
  addEventListener("offline", update);
  update();
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}

/** Registers the service worker; its URL carries the sync server and the outbox database it flushes. */
export async function registerServiceWorker(syncUrl: string, dbName: string): Promise<void> {
  if (!("serviceWorker" in navigator)) return;
  const params = new URLSearchParams({ server: syncUrl, db: dbName });
  await navigator.serviceWorker.register(`/sw.js?${params}`, { scope: "/" });
}
