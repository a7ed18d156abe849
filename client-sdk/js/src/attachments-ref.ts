/**
 * Attachment references (PROTOCOL §10.1): a register value `{"$attachment": {id, size, sha256, media_type, name?}}`
 * that names a file whose bytes travel beside the sync protocol (tus upload, plain download).
 */
import type { Json } from "./types.js";

export interface AttachmentRef {
  /** chosen by the device, offline (a UUID) */
  id: string;
  size: number;
  /** 64 lowercase hex digits */
  sha256: string;
  /** `type/subtype`, lowercase */
  media_type: string;
  /** the file's name on the device, informative only */
  name?: string;
}

/** Where an attached file is on this device: waiting, being sent, on the server, or refused for good. */
export type UploadState = "queued" | "uploading" | "uploaded" | "refused";

/**
 * What the server says of an attachment a pulled entity references (PROTOCOL §10.2): no verified bytes yet,
 * downloadable, or refused for good. `available` and `refused` are final.
 */
export type RemoteStatus = "pending" | "available" | "refused";
export const REMOTE_STATUSES: ReadonlySet<string> = new Set(["pending", "available", "refused"]);
/** Most ids one `POST /v1/attachments/status` may ask about. */
export const MAX_STATUS_IDS = 500;

/**
 * The answer of `POST /v1/attachments/status` (`AttachmentStatusResponse`): members a newer server may add, and
 * statuses this version does not know, are left out. Throws a TypeError if it is not that shape at all.
 */
export function readAttachmentStatusResponse(v: unknown): { attachments: Record<string, RemoteStatus> } {
  const found = (v as { attachments?: unknown } | null)?.attachments;
  if (typeof found !== "object" || found === null || Array.isArray(found)) throw new TypeError("no attachments object");
  const attachments: Record<string, RemoteStatus> = {};
  for (const [id, status] of Object.entries(found)) {
    if (REMOTE_STATUSES.has(status as string)) attachments[id] = status as RemoteStatus;
  }
  return { attachments };
}

const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** A reference as the server decodes it, or a TypeError now rather than plain JSON on the server later. */
export function attachmentRef(fields: AttachmentRef): AttachmentRef {
  const { id, size, sha256, name } = fields;
  const mediaType = fields.media_type.toLowerCase();
  if (!id || id.startsWith(".") || id.length > 128) throw new TypeError(`bad attachment id ${JSON.stringify(id)}`);
  if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`bad attachment size ${size}`);
  if (!SHA256.test(sha256)) throw new TypeError("sha256 must be 64 lowercase hex digits");
  if (!MEDIA_TYPE.test(mediaType)) throw new TypeError(`media type ${JSON.stringify(fields.media_type)} is not type/subtype`);
  const ref: AttachmentRef = { id, size, sha256, media_type: mediaType };
  if (name !== undefined) ref.name = Array.from(name).slice(0, 255).join("");
  return ref;
}

/** The register value that holds `ref`. */
export function refValue(ref: AttachmentRef): Json {
  return { $attachment: { ...ref } };
}

/** The reference a register value holds, or null for any other value (a malformed one is plain JSON, §10.1). */
export function asAttachmentRef(value: unknown): AttachmentRef | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const keys = Object.keys(value);
  if (keys.length !== 1 || keys[0] !== "$attachment") return null;
  const inner = (value as { $attachment: unknown }).$attachment;
  if (typeof inner !== "object" || inner === null || Array.isArray(inner)) return null;
  const o = inner as Record<string, unknown>;
  const allowed = new Set(["id", "size", "sha256", "media_type", "name"]);
  if (Object.keys(o).some((k) => !allowed.has(k))) return null;
  if (typeof o.id !== "string" || typeof o.size !== "number" || typeof o.sha256 !== "string") return null;
  if (typeof o.media_type !== "string" || (o.name !== undefined && typeof o.name !== "string")) return null;
  try {
    const ref = attachmentRef(o as unknown as AttachmentRef);
    return ref.media_type === o.media_type ? ref : null;
  } catch {
    return null;
  }
}

/** SHA-256 of a Blob as lowercase hex (WebCrypto). */
export async function sha256Hex(blob: Blob): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return hex(new Uint8Array(digest));
}

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
