/** Why a sync round failed. Nothing is lost on any of them: call again later. */
export class SyncError extends Error {
  override name = "SyncError";
}

/** The server could not be reached or did not answer with protocol JSON; retry, replays are safe. */
export class TransportError extends SyncError {
  override name = "TransportError";
}

/** The server answered with an `ErrorResponse` (or a WebSocket close code, PROTOCOL §9.7). */
export class ServerError extends SyncError {
  override name = "ServerError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** seconds from `Retry-After`, if the server sent one */
    readonly retryAfter: number | null = null,
  ) {
    super(`${status} ${code}: ${message}`);
  }

  /** 5xx, 408 and 429 heal by waiting; other 4xx need a change (a token, an upgrade). */
  get retryable(): boolean {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }

  /** The token is missing, expired or refused: get a fresh one and retry. */
  get needsToken(): boolean {
    return this.status === 401;
  }
}

/** The server broke the protocol (a result that does not match its change). */
export class ProtocolViolation extends SyncError {
  override name = "ProtocolViolation";
}
