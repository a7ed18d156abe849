// The dispatcher's console: every delivery of the tenant, updated live as drivers sync, the values
// still in conflict, and the server's conflict log (GET /v1/conflicts, which a dispatcher may read).
import { SyncClient } from "@syncserver/client";
import {
  type AppConfig,
  ago,
  bindSyncBar,
  h,
  loadConfig,
  money,
  paced,
  statusLabel,
  tokenProvider,
} from "./shared";
import { attachmentUrl, refOf } from "./pod";

type Fields = Record<string, unknown>;
interface FieldView {
  kind: string;
  value: unknown;
  siblings?: { value: unknown; replica: string }[];
}
interface Row {
  entity: string;
  fields: Fields;
  siblings: Record<string, { value: unknown; replica: string }[]>;
  /** the server's status of each attachment the entity references (PROTOCOL §10.2) */
  attachments: Record<string, string>;
}

const PROOF_FIELDS = [
  ["pod_photo", "photo"],
  ["pod_signature", "signature"],
] as const;
interface ConflictValue {
  value: unknown;
  replica: string;
  user: string;
}
interface Conflict {
  id: string;
  entity: string;
  field: string | null;
  kind: string;
  rule: string;
  status: string;
  created_at: string;
  values: ConflictValue[];
  winner?: ConflictValue | null;
}

const main = document.getElementById("main")!;
const STATUSES = ["pending", "out_for_delivery", "delivered", "failed"];

function num(value: unknown): number {
  return typeof value === "number" ? value : 0;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** "web-6559b161-720a-…" → "web-6559b161": enough to tell two devices apart. */
function device(replica: string): string {
  return replica.split("-").slice(0, 2).join("-");
}

function show(value: unknown): string {
  return typeof value === "string" ? statusLabel(value) : JSON.stringify(value);
}

class Console {
  private rows = new Map<string, Row>();
  private flash = new Set<string>();
  private feed: { at: number; text: string }[] = [];
  private conflicts: Conflict[] = [];
  private conflictTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly table = h("tbody", { id: "deliveries" });
  private readonly conflictList = h("ol", { class: "conflicts", id: "conflicts" });
  private readonly feedList = h("ol", { class: "feed", id: "feed" });

  constructor(
    readonly client: SyncClient,
    readonly config: AppConfig,
    readonly token: () => Promise<string>,
  ) {}

  start(): void {
    main.replaceChildren(
      h(
        "section",
        { class: "card wide" },
        h("h1", { class: "section-title" }, "Deliveries"),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "grid" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["Delivery", "Driver", "Status", "Cash", "Parcels", "Notes", "GPS", "Proof"].map((c) => h("th", {}, c)),
              ),
            ),
            this.table,
          ),
        ),
      ),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { class: "card" },
          h("h2", {}, "Conflicts ", h("span", { class: "count", id: "conflict-count" }, "0")),
          h("p", { class: "hint" }, "Concurrent edits the server merged, from its conflict log; the rule picked the winner."),
          this.conflictList,
        ),
        h("section", { class: "card" }, h("h2", {}, "Live activity"), this.feedList),
      ),
    );
    const deliveries = this.client.collection("deliveries");
    this.client.watch(
      paced(async () => {
        const rows = await deliveries.list();
        return Promise.all(
          rows.map(async (r) => {
            const view = (await deliveries.view(r.entity)) as
              | { fields?: Record<string, FieldView>; attachments?: Record<string, string> }
              | undefined;
            const siblings: Row["siblings"] = {};
            for (const [name, f] of Object.entries(view?.fields ?? {})) {
              if (f.siblings && f.siblings.length > 1) siblings[name] = f.siblings;
            }
            return { entity: r.entity, fields: r.fields as Fields, siblings, attachments: view?.attachments ?? {} };
          }),
        );
      }),
      (rows) => this.update(rows),
    );
    this.client.subscribe((event) => {
      if (event.type === "remote_change" || event.type === "conflict") this.refreshConflicts(300);
      if (event.type === "attachment" && event.status !== "pending") {
        const what = event.status === "available" ? "uploaded" : "upload refused";
        this.feed.unshift({ at: Date.now(), text: `${this.proofName(event.id)}: ${what}` });
      }
    });
    this.refreshConflicts(0);
    setInterval(() => this.refreshConflicts(0), 10_000);
  }

  update(rows: Row[]): void {
    const first = this.rows.size === 0;
    for (const row of rows) {
      const before = this.rows.get(row.entity);
      if (!first) {
        for (const line of describe(row, before)) this.feed.unshift({ at: Date.now(), text: line });
        if (!before || JSON.stringify(before.fields) !== JSON.stringify(row.fields)) this.flash.add(row.entity);
      }
      this.rows.set(row.entity, row);
    }
    this.feed = this.feed.slice(0, 50);
    this.render();
  }

  render(): void {
    const rows = [...this.rows.values()].sort(
      (a, b) =>
        String(a.fields.driver_id).localeCompare(String(b.fields.driver_id)) ||
        num(a.fields.stop) - num(b.fields.stop),
    );
    this.table.replaceChildren(
      ...rows.map((r) => {
        const f = r.fields;
        const tr = h(
          "tr",
          { "data-entity": r.entity, class: this.flash.has(r.entity) ? "flash" : "" },
          h("td", {}, h("strong", {}, String(f.customer ?? r.entity)), h("div", { class: "muted" }, r.entity)),
          h("td", { class: "nowrap" }, String(f.driver_id ?? "—")),
          h("td", { class: "status-cell" }, this.statusControl(r)),
          h("td", {}, money(num(f.cod_cents)), h("div", { class: "muted" }, `of ${money(num(f.cod_due_cents))}`)),
          h("td", {}, `${list(f.scanned).length}/${list(f.parcels).length}`),
          h("td", { class: "notes-cell" }, String(f.notes ?? "")),
          h("td", {}, String(list(f.trail).length)),
          h("td", { class: "proof-cell" }, this.proofOf(r)),
        );
        return tr;
      }),
    );
    setTimeout(() => {
      for (const tr of this.table.querySelectorAll("tr.flash")) tr.classList.remove("flash");
      this.flash.clear();
    }, 1500);
    this.feedList.replaceChildren(
      ...(this.feed.length
        ? this.feed.map((e) => h("li", {}, h("time", {}, ago(e.at)), " ", e.text))
        : [h("li", { class: "muted" }, "Waiting for drivers…")]),
    );
  }

  /** Object URLs of downloaded attachments, by id. */
  private readonly proofUrls = new Map<string, string>();
  private readonly proofLoading = new Set<string>();

  /**
   * Thumbnails of the delivery's photo and signature. The SDK keeps the server's status of each attachment
   * (PROTOCOL §10.2) and refreshes the pending ones itself, so a thumbnail is downloaded once the status says
   * `available` (the `attachment` event re-runs the watch that feeds these rows), and a refused upload is marked;
   * nothing here polls.
   */
  proofOf(r: Row): HTMLElement {
    return h(
      "div",
      { class: "proof" },
      ...PROOF_FIELDS.map(([field, kind]) => {
        const ref = refOf(r.fields[field]);
        if (!ref) return null;
        const url = this.proofUrls.get(ref.id);
        const remote = r.attachments[ref.id] ?? "pending";
        const state = url ? "available" : remote === "available" ? "loading" : remote;
        if (!url && remote === "available") this.loadProof(ref);
        return h(
          "figure",
          { "data-kind": kind, "data-state": state, "data-id": ref.id, id: `proof-${r.entity}-${kind}` },
          h(
            "div",
            { class: "thumb" },
            url ? h("img", { src: url, alt: `${kind} of ${r.entity}` }) : remote === "refused" ? "✕" : "…",
          ),
          h("figcaption", {}, `${kind} · ${remote === "refused" ? "refused" : url ? "available" : "pending"}`),
        );
      }),
    );
  }

  /** "dlv-1001 photo" for an attachment id a row references. */
  private proofName(id: string): string {
    for (const row of this.rows.values()) {
      for (const [field, kind] of PROOF_FIELDS) if (refOf(row.fields[field])?.id === id) return `${row.entity} ${kind}`;
    }
    return `${id.slice(0, 8)}…`;
  }

  private loadProof(ref: NonNullable<ReturnType<typeof refOf>>): void {
    if (this.proofLoading.has(ref.id)) return;
    this.proofLoading.add(ref.id);
    void attachmentUrl(this.client, ref).then((url) => {
      this.proofLoading.delete(ref.id); // failed (offline): the next render tries again
      if (url && !this.proofUrls.has(ref.id)) {
        this.proofUrls.set(ref.id, url);
        this.render();
      }
    });
  }

  statusControl(r: Row): HTMLElement {
    const current = String(r.fields.status ?? "");
    const select = h(
      "select",
      {
        "aria-label": `Status of ${r.entity}`,
        onchange: (e: Event) => {
          const value = (e.target as HTMLSelectElement).value;
          this.client
            .collection("deliveries")
            .set(r.entity, { status: value })
            .catch((err: unknown) => console.error("status not saved", err));
        },
      },
      ...STATUSES.map((s) => h("option", { value: s, selected: s === current }, statusLabel(s))),
    );
    const siblings = r.siblings.status;
    return h(
      "div",
      {},
      select,
      siblings
        ? h(
            "div",
            { class: "conflict-note", "data-conflict": "status" },
            `⚠ ${siblings.length} concurrent values: `,
            siblings.map((s) => `${show(s.value)} (${device(s.replica)})`).join(" vs "),
          )
        : null,
    );
  }

  refreshConflicts(delay: number): void {
    if (this.conflictTimer !== null) clearTimeout(this.conflictTimer);
    this.conflictTimer = setTimeout(() => void this.loadConflicts(), delay);
  }

  async loadConflicts(): Promise<void> {
    try {
      const r = await fetch(`${this.config.syncUrl}/v1/conflicts?collection=deliveries&limit=100`, {
        headers: { Authorization: `Bearer ${await this.token()}` },
      });
      if (!r.ok) return;
      const page = (await r.json()) as { conflicts: Conflict[] };
      this.conflicts = page.conflicts.reverse();
    } catch {
      return; // offline: keep the last list
    }
    document.getElementById("conflict-count")!.textContent = String(this.conflicts.length);
    this.conflictList.replaceChildren(
      ...(this.conflicts.length
        ? this.conflicts.map((c) =>
            h(
              "li",
              { "data-conflict-id": c.id, "data-entity": c.entity },
              h(
                "div",
                { class: "stop-head" },
                h("strong", {}, `${c.entity} · ${c.field ?? c.kind}`),
                h("span", { class: `badge c-${c.status}` }, c.status),
              ),
              h(
                "ul",
                { class: "values" },
                ...c.values.map((v) =>
                  h(
                    "li",
                    {
                      class:
                        c.winner && c.winner.replica === v.replica && JSON.stringify(c.winner.value) === JSON.stringify(v.value)
                          ? "winner"
                          : "",
                    },
                    h("strong", {}, show(v.value)),
                    ` by ${v.user} on ${device(v.replica)}`,
                  ),
                ),
              ),
              h("div", { class: "muted" }, `rule ${c.rule} · ${new Date(c.created_at).toLocaleTimeString()} · ${c.id}`),
            ),
          )
        : [h("li", { class: "muted" }, "No conflicts.")]),
    );
  }
}

/** Feed lines for what changed in a delivery since the last render. */
function describe(row: Row, before: Row | undefined): string[] {
  const f = row.fields;
  const who = String(f.driver_id ?? "");
  if (!before) return [`${row.entity} assigned to ${who}`];
  const b = before.fields;
  const lines: string[] = [];
  if (f.status !== b.status) lines.push(`${row.entity}: ${statusLabel(b.status)} → ${statusLabel(f.status)}`);
  if (num(f.cod_cents) !== num(b.cod_cents)) lines.push(`${row.entity}: cash ${money(num(f.cod_cents))} (${who})`);
  if (list(f.scanned).length !== list(b.scanned).length)
    lines.push(`${row.entity}: ${list(f.scanned).length} parcel(s) scanned`);
  if (f.notes !== b.notes) lines.push(`${row.entity}: notes “${String(f.notes ?? "").slice(0, 40)}”`);
  if (list(f.trail).length !== list(b.trail).length) lines.push(`${row.entity}: ${list(f.trail).length} GPS points`);
  for (const [field, kind] of PROOF_FIELDS) {
    if (refOf(f[field])?.id !== refOf(b[field])?.id && refOf(f[field])) lines.push(`${row.entity}: ${kind} attached (${who})`);
  }
  return lines;
}

async function boot(): Promise<void> {
  const config = await loadConfig();
  const token = tokenProvider("dispatcher", "dispatcher-1");
  const client = await SyncClient.open({
    url: config.syncUrl,
    token,
    dbName: "driver-pwa:dispatcher",
    schema: config.schema,
  });
  const console_ = new Console(client, config, token);
  (globalThis as unknown as { dispatcherApp: Console }).dispatcherApp = console_;
  bindSyncBar(client);
  console_.start();
  await client.start();
  document.body.dataset.ready = "1";
}

boot().catch((err: unknown) => {
  main.replaceChildren(h("section", { class: "card" }, h("h1", {}, "Can't start"), h("p", {}, String(err))));
});
