"""Stable error codes. Clients branch on these strings; they never change meaning.

The table in PROTOCOL.md lists each with its HTTP status and whether it
applies to a whole request or to one change (``rejected``).
"""

from __future__ import annotations

# Whole request
MALFORMED_JSON = "malformed_json"
INVALID_REQUEST = "invalid_request"
UNKNOWN_OP = "unknown_op"
BODY_TOO_LARGE = "body_too_large"
TOO_MANY_CHANGES = "too_many_changes"
UNAUTHORIZED = "unauthorized"
TOKEN_EXPIRED = "token_expired"  # noqa: S105 - an error code, not a secret
FORBIDDEN = "forbidden"
TENANT_UNKNOWN = "tenant_unknown"
REPLICA_FORBIDDEN = "replica_forbidden"
INVALID_CURSOR = "invalid_cursor"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
INTERNAL = "internal"
UNAVAILABLE = "unavailable"
DATA_INTEGRITY = "data_integrity"

# Per change (status "rejected"; the change is kept as a dead letter)
INVALID_CHANGE = "invalid_change"
KIND_MISMATCH = "kind_mismatch"
INVALID_TEXT_UPDATE = "invalid_text_update"
VALUE_TOO_LARGE = "value_too_large"
TOO_MANY_OPS = "too_many_ops"
TOO_MANY_FIELDS = "too_many_fields"
N_REUSED = "n_reused"
ID_TOO_LONG = "id_too_long"
FIELD_NAME_TOO_LONG = "field_name_too_long"
VALUE_OUT_OF_RANGE = "value_out_of_range"
VALUE_TOO_DEEP = "value_too_deep"

REQUEST_CODES = frozenset(
    {
        MALFORMED_JSON,
        INVALID_REQUEST,
        UNKNOWN_OP,
        BODY_TOO_LARGE,
        TOO_MANY_CHANGES,
        UNAUTHORIZED,
        TOKEN_EXPIRED,
        FORBIDDEN,
        TENANT_UNKNOWN,
        REPLICA_FORBIDDEN,
        INVALID_CURSOR,
        NOT_FOUND,
        RATE_LIMITED,
        INTERNAL,
        UNAVAILABLE,
        DATA_INTEGRITY,
        ID_TOO_LONG,
    }
)
CHANGE_CODES = frozenset(
    {
        INVALID_CHANGE,
        KIND_MISMATCH,
        INVALID_TEXT_UPDATE,
        VALUE_TOO_LARGE,
        TOO_MANY_OPS,
        TOO_MANY_FIELDS,
        N_REUSED,
        FORBIDDEN,
        ID_TOO_LONG,
        FIELD_NAME_TOO_LONG,
        VALUE_OUT_OF_RANGE,
        VALUE_TOO_DEEP,
        DATA_INTEGRITY,
    }
)

# Attachments: tus uploads and downloads (see PROTOCOL.md, "Attachments"). An upload refused with one of
# ATTACHMENT_REFUSALS is kept as a dead letter of its attachment (admins can replay it).
ATTACHMENT_TOO_LARGE = "attachment_too_large"
MEDIA_TYPE_NOT_ALLOWED = "media_type_not_allowed"
ATTACHMENT_HASH_MISMATCH = "attachment_hash_mismatch"
CHECKSUM_MISMATCH = "checksum_mismatch"
OFFSET_MISMATCH = "offset_mismatch"
UPLOAD_EXPIRED = "upload_expired"
ATTACHMENT_CONFLICT = "attachment_conflict"
RANGE_NOT_SATISFIABLE = "range_not_satisfiable"

ATTACHMENT_REFUSALS = frozenset({ATTACHMENT_TOO_LARGE, MEDIA_TYPE_NOT_ALLOWED, ATTACHMENT_HASH_MISMATCH})
ATTACHMENT_CODES = ATTACHMENT_REFUSALS | {
    CHECKSUM_MISMATCH,
    OFFSET_MISMATCH,
    UPLOAD_EXPIRED,
    ATTACHMENT_CONFLICT,
    RANGE_NOT_SATISFIABLE,
}

# WebSocket channel only: the reason of a close (see PROTOCOL.md, "WebSocket channel")
VERSION_UNSUPPORTED = "version_unsupported"
TOO_MANY_CONNECTIONS = "too_many_connections"
TIMEOUT = "timeout"
GOING_AWAY = "going_away"

WS_CODES = frozenset({VERSION_UNSUPPORTED, TOO_MANY_CONNECTIONS, TIMEOUT, GOING_AWAY})

REQUEST_STATUS = {
    MALFORMED_JSON: 400,
    INVALID_REQUEST: 422,
    UNKNOWN_OP: 422,
    BODY_TOO_LARGE: 413,
    TOO_MANY_CHANGES: 413,
    UNAUTHORIZED: 401,
    TOKEN_EXPIRED: 401,
    TENANT_UNKNOWN: 401,
    FORBIDDEN: 403,
    REPLICA_FORBIDDEN: 403,
    INVALID_CURSOR: 400,
    NOT_FOUND: 404,
    RATE_LIMITED: 429,
    ID_TOO_LONG: 422,
    DATA_INTEGRITY: 500,
    INTERNAL: 500,
    UNAVAILABLE: 503,
}
"""The HTTP status of each request-level code (PROTOCOL.md's error table). The WebSocket
channel sends the code alone; clients use this to tell a retryable failure from a fix."""
