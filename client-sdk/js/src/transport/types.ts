import type { PullRequest, PullResponse, PushRequest, PushResponse } from "../types.js";

/** One way to reach the server. `push` and `pull` have HTTP's semantics on every transport. */
export interface Transport {
  readonly name: "http" | "ws";
  push(request: PushRequest): Promise<PushResponse>;
  pull(request: PullRequest): Promise<PullResponse>;
  close(): Promise<void>;
}

/** A transport that also announces changes as the server logs them (the WebSocket channel). */
export interface LiveTransport extends Transport {
  readonly name: "ws";
  /** Resolves true when a page is waiting for `pull`, false after `maxWaitMs` without one; rejects when the session ends. */
  waitForChanges(maxWaitMs: number): Promise<boolean>;
  /** Hand a fresh token to the open session (`auth`, PROTOCOL §9.1). */
  refreshToken(token: string): Promise<void>;
}

export function isLive(t: Transport): t is LiveTransport {
  return t.name === "ws";
}

/** Where tokens come from: a fixed string, or a function called again when one is refused or about to expire. */
export type TokenProvider = string | (() => string | Promise<string>);
