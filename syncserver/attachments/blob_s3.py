"""``S3BlobStore``: blobs as objects in an S3-compatible bucket (AWS, MinIO, Ceph, moto)."""

from __future__ import annotations

from obstore.store import S3Store

from syncserver.attachments.blob_obstore import ObstoreBlobStore


class S3BlobStore(ObstoreBlobStore):
    """Objects in ``bucket``; credentials from the arguments or the usual ``AWS_*`` environment.

    ``endpoint`` points at a non-AWS service (``http://`` is allowed only for 127.0.0.1/localhost).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        config: dict[str, str] = {}
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        if access_key_id:
            config["access_key_id"] = access_key_id
        if secret_access_key:
            config["secret_access_key"] = secret_access_key
        local = endpoint is not None and endpoint.startswith(("http://127.0.0.1", "http://localhost"))
        client = {"allow_http": True} if local else None
        super().__init__(S3Store(bucket, config=config, client_options=client))  # type: ignore[arg-type]
        self.bucket = bucket
