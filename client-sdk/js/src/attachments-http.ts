/**
 * HTTP stacks for tus-js-client. A service worker has no XMLHttpRequest (tus-js-client's
 * browser default), so `FetchHttpStack` sends its requests with `fetch`; upload progress is
 * then reported per chunk, when each PATCH completes. `ChecksumHttpStack` wraps either one
 * and adds tus's `Upload-Checksum` (SHA-1, WebCrypto) to every request carrying bytes (PATCH, and
 * the creation that carries the first chunk), so the server refuses
 * a chunk damaged on the way (460 `checksum_mismatch`) instead of storing it.
 * `IdleTimeoutHttpStack` aborts a request that makes no progress for a while (a half-open mobile
 * connection answers nothing and fails nothing), so one stalled file cannot hold the upload queue.
 */
import type { HttpRequest, HttpResponse, HttpStack } from "tus-js-client";

type Fetch = typeof fetch;

export class FetchHttpStack implements HttpStack {
  constructor(private readonly fetchImpl: Fetch = (input, init) => fetch(input, init)) {}

  createRequest(method: string, url: string): HttpRequest {
    return new FetchRequest(method, url, this.fetchImpl);
  }

  getName(): string {
    return "FetchHttpStack";
  }
}

class FetchRequest implements HttpRequest {
  private readonly headers: Record<string, string> = {};
  private readonly controller = new AbortController();
  private onProgress: ((bytesSent: number) => void) | null = null;

  constructor(
    private readonly method: string,
    private readonly url: string,
    private readonly fetchImpl: Fetch,
  ) {}

  getMethod(): string {
    return this.method;
  }

  getURL(): string {
    return this.url;
  }

  setHeader(header: string, value: string): void {
    this.headers[header] = value;
  }

  getHeader(header: string): string | undefined {
    return this.headers[header];
  }

  setProgressHandler(handler: (bytesSent: number) => void): void {
    this.onProgress = handler;
  }

  async send(body?: Blob | ArrayBuffer | null): Promise<HttpResponse> {
    const response = await this.fetchImpl(this.url, {
      method: this.method,
      headers: this.headers,
      body: body ?? null,
      signal: this.controller.signal,
    });
    const text = await response.text();
    if (body && this.onProgress) this.onProgress(body instanceof Blob ? body.size : body.byteLength);
    return new FetchResponse(response, text);
  }

  abort(): Promise<void> {
    this.controller.abort();
    return Promise.resolve();
  }

  getUnderlyingObject(): unknown {
    return this.controller;
  }
}

class FetchResponse implements HttpResponse {
  constructor(
    private readonly response: Response,
    private readonly body: string,
  ) {}

  getStatus(): number {
    return this.response.status;
  }

  getHeader(header: string): string | undefined {
    return this.response.headers.get(header) ?? undefined;
  }

  getBody(): string {
    return this.body;
  }

  getUnderlyingObject(): unknown {
    return this.response;
  }
}

/** Adds `Upload-Checksum: sha1 <base64>` to the requests of `inner` that carry upload bytes (PATCH, and a
 * POST with creation-with-upload). */
export class ChecksumHttpStack implements HttpStack {
  constructor(private readonly inner: HttpStack) {}

  createRequest(method: string, url: string): HttpRequest {
    const request = this.inner.createRequest(method, url);
    return method === "PATCH" || method === "POST" ? new ChecksummedRequest(request) : request;
  }

  getName(): string {
    return `Checksum(${this.inner.getName()})`;
  }
}

/** A request that does what `inner` does: the wrappers below override what they change. */
class ForwardingRequest implements HttpRequest {
  constructor(protected readonly inner: HttpRequest) {}

  getMethod(): string {
    return this.inner.getMethod();
  }

  getURL(): string {
    return this.inner.getURL();
  }

  setHeader(header: string, value: string): void {
    this.inner.setHeader(header, value);
  }

  getHeader(header: string): string | undefined {
    return this.inner.getHeader(header);
  }

  setProgressHandler(handler: (bytesSent: number) => void): void {
    this.inner.setProgressHandler(handler);
  }

  send(body?: Blob | ArrayBuffer | null): Promise<HttpResponse> {
    return this.inner.send(body);
  }

  abort(): Promise<void> {
    return this.inner.abort();
  }

  getUnderlyingObject(): unknown {
    return this.inner.getUnderlyingObject();
  }
}

class ChecksummedRequest extends ForwardingRequest {
  override async send(body?: Blob | ArrayBuffer | null): Promise<HttpResponse> {
    if (body) {
      const bytes = body instanceof Blob ? await body.arrayBuffer() : body;
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", bytes));
      this.inner.setHeader("Upload-Checksum", `sha1 ${btoa(String.fromCharCode(...digest))}`);
    }
    return this.inner.send(body);
  }
}

/** A request aborted by `IdleTimeoutHttpStack`: a transient failure, retried later from the server's offset. */
export class UploadStalled extends Error {
  override name = "UploadStalled";
}

/**
 * Fails a request of `inner` that makes no progress for `idleMs`: nothing sent (XMLHttpRequest reports
 * progress within a request; `fetch` only when a chunk is done) and no answer. An idle timeout, not a
 * total one, so a large chunk on a slow but moving link still gets through. It rejects by itself: an
 * aborted XMLHttpRequest never settles the stack's promise.
 */
export class IdleTimeoutHttpStack implements HttpStack {
  constructor(
    private readonly inner: HttpStack,
    private readonly idleMs: number,
  ) {}

  createRequest(method: string, url: string): HttpRequest {
    return new IdleTimeoutRequest(this.inner.createRequest(method, url), this.idleMs);
  }

  getName(): string {
    return `IdleTimeout(${this.inner.getName()})`;
  }
}

class IdleTimeoutRequest extends ForwardingRequest {
  /** Restarts the idle timer while a request is out. */
  private touch: () => void = () => undefined;

  constructor(
    inner: HttpRequest,
    private readonly idleMs: number,
  ) {
    super(inner);
    inner.setProgressHandler(() => this.touch());
  }

  override setProgressHandler(handler: (bytesSent: number) => void): void {
    this.inner.setProgressHandler((bytesSent) => {
      this.touch();
      handler(bytesSent);
    });
  }

  override send(body?: Blob | ArrayBuffer | null): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.touch = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          this.touch = () => undefined;
          this.inner.abort().catch(() => undefined);
          reject(new UploadStalled(`${this.getMethod()} made no progress for ${this.idleMs} ms`));
        }, this.idleMs);
      };
      this.touch();
      const done = (): void => {
        clearTimeout(timer);
        this.touch = () => undefined;
      };
      this.inner.send(body).then(
        (response) => {
          done();
          resolve(response);
        },
        (exc: unknown) => {
          done();
          reject(exc instanceof Error ? exc : new Error(String(exc)));
        },
      );
    });
  }
}
