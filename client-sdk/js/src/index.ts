/** The browser SDK of the sync server (protocol v1). See README.md. */
export {
  ATTACHMENT_REFUSALS,
  Attachments,
  type AttachmentStatus,
  type AttachOptions,
  type RemoteStatusChange,
} from "./attachments.js";
export { ChecksumHttpStack, FetchHttpStack } from "./attachments-http.js";
export {
  asAttachmentRef,
  attachmentRef,
  MAX_STATUS_IDS,
  refValue,
  type AttachmentRef,
  type RemoteStatus,
  type UploadState,
} from "./attachments-ref.js";
export { Backoff, parseRetryAfter } from "./backoff.js";
export {
  BACKGROUND_SYNC_TAG,
  CollectionHandle,
  MAX_CHANGE_BYTES,
  SyncClient,
  type ClientStatus,
  type Row,
  type SyncClientOptions,
} from "./client.js";
export { ProtocolViolation, ServerError, SyncError, TransportError } from "./errors.js";
export type { ConnectionState, Handler, SyncEvent } from "./events.js";
export { applyPending, mergeDelta, optimisticView, predictsRejection, visible } from "./optimistic.js";
export type { SyncStats } from "./roundtrip.js";
export { Collection, type CollectionSpec, type FieldSpec, type Schema } from "./schema.js";
export type { Rejection } from "./store.js";
export { LocalLocks, type LockManagerLike } from "./tabs.js";
export { InvalidTextUpdate } from "./text.js";
export { HttpTransport } from "./transport/http.js";
export type { LiveTransport, TokenProvider, Transport } from "./transport/types.js";
export { connectWebSocket, type WebSocketConstructor, type WebSocketLike } from "./transport/ws.js";
export type * from "./types.js";
export { validateChange, validatePullRequest, validatePushRequest, WireError } from "./wire.js";
