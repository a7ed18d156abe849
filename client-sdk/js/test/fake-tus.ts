/**
 * A tus 1.0 server (creation, creation-with-upload, checksum) and the attachment download, in process behind a `fetch` function,
 * beside a `FakeServer` for the sync API: enough to unit-test the SDK's uploads (the real server is used by
 * the browser tests).
 */
import { createHash } from "node:crypto";

import { FakeServer, json } from "./fake-server.js";

export class FakeTus {
  readonly uploads = new Map<
    string,
    { length: number; sha256: string; mediaType: string; bytes: Uint8Array<ArrayBuffer>; offset: number; refused?: string }
  >();
  readonly requests: string[] = [];
  /** bytes the PATCHes and the creation carried, per upload */
  readonly patched = new Map<string, number>();
  refuseMediaType = "application/x-refused";
  /** fail the next PATCH of this upload with a network error after the server kept its bytes (a cut connection) */
  cutAfterChunk: number | null = null;
  /** serve these bytes instead of the stored ones (a damaged download) */
  tamper = false;
  readonly api = new FakeServer();

  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
    const method = init?.method ?? "GET";
    const headers = new Headers(init?.headers);
    if (!url.pathname.startsWith("/v1/attachments")) return this.api.fetch(input, init);
    this.requests.push(`${method} ${url.pathname}`);
    if (headers.get("authorization") !== "Bearer t0") return json({ error: { code: "unauthorized", message: "" } }, 401);
    const id = url.pathname.split("/").at(-1) as string;
    if (method === "POST") {
      const meta: Record<string, string> = Object.fromEntries(
        (headers.get("upload-metadata") ?? "").split(",").map((kv) => {
          const [k, v] = kv.split(" ");
          return [k ?? "", Buffer.from(v ?? "", "base64").toString()];
        }),
      );
      if (meta.media_type === this.refuseMediaType) {
        return json({ error: { code: "media_type_not_allowed", message: "not allowed here" } }, 415);
      }
      const length = Number(headers.get("upload-length"));
      const created = !this.uploads.has(meta.id!);
      if (created) {
        this.uploads.set(meta.id!, { length, sha256: meta.sha256!, mediaType: meta.media_type!, bytes: new Uint8Array(length), offset: 0 });
      }
      const upload = this.uploads.get(meta.id!)!;
      const location = { Location: `/v1/attachments/uploads/${meta.id}` };
      if (headers.get("content-type") === "application/offset+octet-stream" && upload.offset === 0) {
        return this.append(meta.id!, upload, headers, init, 201, location); // creation-with-upload
      }
      return new Response(null, { status: 201, headers: { ...location, "Upload-Offset": String(upload.offset) } });
    }
    const upload = this.uploads.get(id);
    if (!upload) return json({ error: { code: "not_found", message: id } }, 404);
    if (method === "HEAD") {
      return new Response(null, { status: 200, headers: { "Upload-Offset": String(upload.offset), "Upload-Length": String(upload.length) } });
    }
    if (method === "PATCH") {
      if (Number(headers.get("upload-offset")) !== upload.offset) return json({ error: { code: "offset_mismatch", message: "" } }, 409);
      return this.append(id, upload, headers, init, 204, {});
    }
    if (method === "GET") {
      if (upload.offset !== upload.length) return json({ error: { code: "not_found", message: id } }, 404);
      const bytes = this.tamper ? upload.bytes.map((b, i) => (i === 0 ? b ^ 1 : b)) : upload.bytes;
      return new Response(bytes, { status: 200, headers: { "Content-Type": upload.mediaType } });
    }
    return json({ error: { code: "method_not_allowed", message: method } }, 405);
  };

  /** Keep a request's body at the upload's offset (a PATCH, or a creation carrying data). */
  private async append(
    id: string,
    upload: { length: number; sha256: string; bytes: Uint8Array<ArrayBuffer>; offset: number; refused?: string },
    headers: Headers,
    init: RequestInit | undefined,
    status: number,
    extra: Record<string, string>,
  ): Promise<Response> {
    const body = new Uint8Array(await (init?.body as Blob).arrayBuffer());
    const sha1 = createHash("sha1").update(body).digest("base64");
    if (headers.get("upload-checksum") !== `sha1 ${sha1}`) return json({ error: { code: "checksum_mismatch", message: "" } }, 460);
    upload.bytes.set(body, upload.offset);
    upload.offset += body.length;
    this.patched.set(id, (this.patched.get(id) ?? 0) + body.length);
    if (upload.offset === upload.length && createHash("sha256").update(upload.bytes).digest("hex") !== upload.sha256) {
      upload.refused = "attachment_hash_mismatch";
      return json({ error: { code: "attachment_hash_mismatch", message: "hash differs" } }, 422);
    }
    if (this.cutAfterChunk !== null && --this.cutAfterChunk < 0) {
      this.cutAfterChunk = null;
      throw new TypeError("Failed to fetch");
    }
    return new Response(null, { status, headers: { ...extra, "Upload-Offset": String(upload.offset) } });
  }
}

