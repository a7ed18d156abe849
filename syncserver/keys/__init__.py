"""Envelope encryption: AES-256-GCM data keys per tenant, wrapped by a master key."""

from __future__ import annotations

from syncserver.keys.envelope import DecryptionError, row_aad
from syncserver.keys.keyring import TenantCipher, TenantKeyring
from syncserver.keys.providers import KeyProvider, LocalKeyProvider

__all__ = ["DecryptionError", "KeyProvider", "LocalKeyProvider", "TenantCipher", "TenantKeyring", "row_aad"]
