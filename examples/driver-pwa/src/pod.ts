// Proof of delivery: a camera photo downscaled to a reasonable JPEG, a signature pad saved as PNG, and
// thumbnails of attached files (the SDK's `attachments.fetch` → an object URL).
import type { AttachmentRef, SyncClient } from "@syncserver/client";
import { asAttachmentRef } from "@syncserver/client";

import { h } from "./shared";

/** Longest side of a stored photo: enough to read a house number, about 150–300 KiB as JPEG. */
export const PHOTO_MAX_PX = 1280;

/** The camera's picture, scaled down to `PHOTO_MAX_PX` and re-encoded as JPEG (quality 0.8). */
export async function downscale(file: Blob, maxPx = PHOTO_MAX_PX): Promise<Blob> {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, maxPx / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const ctx = canvas.getContext("2d")!;
  ctx.fillStyle = "#fff"; // a PNG with transparency becomes a white-backed JPEG, not a black one
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return toBlob(canvas, "image/jpeg", 0.8);
}

export function toBlob(canvas: HTMLCanvasElement, type: string, quality?: number): Promise<Blob> {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the canvas could not be encoded"))), type, quality),
  );
}

/** A signature pad: pointer events (finger, pen or mouse) draw strokes; `blob()` is a PNG of what was drawn. */
export class SignaturePad {
  readonly canvas = h("canvas", { id: "signature-pad", class: "signature", "aria-label": "Customer signature" });
  private drawing = false;
  private strokes = 0;

  constructor(onChange: (empty: boolean) => void) {
    const c = this.canvas;
    const ctx = (): CanvasRenderingContext2D => c.getContext("2d")!;
    const at = (e: PointerEvent): [number, number] => {
      const r = c.getBoundingClientRect();
      return [((e.clientX - r.left) * c.width) / r.width, ((e.clientY - r.top) * c.height) / r.height];
    };
    c.width = 600;
    c.height = 240;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.drawing = true;
      const g = ctx();
      g.lineWidth = 3.5;
      g.lineCap = "round";
      g.lineJoin = "round";
      g.strokeStyle = "#14201e";
      g.beginPath();
      g.moveTo(...at(e));
      e.preventDefault();
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.drawing) return;
      ctx().lineTo(...at(e));
      ctx().stroke();
    });
    const end = () => {
      if (!this.drawing) return;
      this.drawing = false;
      this.strokes++;
      onChange(false);
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    this.clear = () => {
      ctx().clearRect(0, 0, c.width, c.height);
      this.strokes = 0;
      onChange(true);
    };
  }

  clear: () => void;

  get empty(): boolean {
    return this.strokes === 0;
  }

  blob(): Promise<Blob> {
    return toBlob(this.canvas, "image/png");
  }
}

/** Object URLs of fetched attachments, by id (an id's bytes never change, so one URL serves every render). */
const urls = new Map<string, string>();

/** An object URL of the attachment's bytes, or null while the server has none this token may read. */
export async function attachmentUrl(client: SyncClient, ref: AttachmentRef): Promise<string | null> {
  const known = urls.get(ref.id);
  if (known) return known;
  try {
    const url = URL.createObjectURL(await client.attachments.fetch(ref));
    urls.set(ref.id, url);
    return url;
  } catch {
    return null; // not uploaded yet (404), or offline: try again later
  }
}

export function refOf(value: unknown): AttachmentRef | null {
  return asAttachmentRef(value);
}
