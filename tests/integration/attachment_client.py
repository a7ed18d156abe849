"""A few tus requests spelled out with httpx, for tests that drive the app in process."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from syncproto.attachments import AttachmentRef

TUS = {"Tus-Resumable": "1.0.0"}
UPLOADS = "/v1/attachments/uploads"


def ref_for(data: bytes, media_type: str = "image/jpeg", attachment_id: str | None = None) -> AttachmentRef:
    return AttachmentRef(
        id=attachment_id or str(uuid.uuid4()),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        media_type=media_type,
    )


def metadata(ref: AttachmentRef) -> str:
    pairs = {"id": ref.id, "sha256": ref.sha256, "media_type": ref.media_type}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


async def create(
    client: Any, headers: dict[str, str], ref: AttachmentRef, data: bytes | None = None, checksum: str | None = None
) -> Any:
    """tus creation; with ``data``, creation-with-upload (the first bytes in the same request)."""
    h = {**headers, **TUS, "Upload-Length": str(ref.size), "Upload-Metadata": metadata(ref)}
    if data is not None:
        h["Content-Type"] = "application/offset+octet-stream"
    if checksum is not None:
        h["Upload-Checksum"] = checksum
    return await client.post(UPLOADS, headers=h, content=data)


async def patch(
    client: Any, headers: dict[str, str], attachment_id: str, offset: int, data: bytes, checksum: str | None = None
) -> Any:
    h = {**headers, **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    if checksum is not None:
        h["Upload-Checksum"] = checksum
    return await client.patch(f"{UPLOADS}/{attachment_id}", headers=h, content=data)


async def upload(client: Any, headers: dict[str, str], ref: AttachmentRef, data: bytes, chunk: int = 100_000) -> Any:
    """Create and send the whole file in PATCHes of ``chunk`` bytes; the last response."""
    r = await create(client, headers, ref)
    assert r.status_code == 201, r.text
    offset = int(r.headers["Upload-Offset"])
    while offset < len(data) or (offset == 0 and not data):
        r = await patch(client, headers, ref.id, offset, data[offset : offset + chunk])
        if r.status_code != 204:
            return r
        offset = int(r.headers["Upload-Offset"])
        if not data:
            break
    return r


def sha1_header(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()
