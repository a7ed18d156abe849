"""Public keys for verifying bearer tokens: one PEM file, or a JWKS file with keys chosen by ``kid``.

Every key carries the only algorithm it may verify: ``RS256`` for an RSA key
(2048 bits or more), ``ES256`` for an EC P-256 key. The HMAC secret has its own
allow-list in ``TokenVerifier``. A token whose header names another algorithm
for the key it selects is refused, which closes algorithm confusion (an RSA
public key used as an HMAC secret) and ``alg: none``; see docs/adr/0007.

A JWKS file is re-read when its modification time changes, checked when a
token names a ``kid`` we do not know: an identity provider's new key works
without a restart. Symmetric (``oct``) and private keys in a JWKS are refused.

Usage::

    keys = PublicKeys.from_files(pem=Path("idp.pem"), jwks=None)
    key = keys.find(kid=None)          # the PEM key: RS256 or ES256
    key = keys.find(kid="2025-11")     # a JWKS key
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

MIN_RSA_BITS = 2048
log = logging.getLogger("syncserver.auth")


class KeyConfigError(ValueError):
    """A key file is unreadable, or holds a key we refuse to verify with."""


@dataclass(frozen=True)
class VerificationKey:
    """A public key and the one algorithm tokens verified with it may use."""

    key: Any
    algorithm: str
    kid: str | None = None

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


def algorithm_for(key: Any) -> str:
    """``RS256`` for RSA (>= 2048 bits), ``ES256`` for EC P-256; anything else raises ``KeyConfigError``."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {key.key_size}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyConfigError(f"EC keys must be on P-256 (ES256), not {key.curve.name}")
        return "ES256"
    raise KeyConfigError(f"unsupported public key type {type(key).__name__}: use RSA (RS256) or EC P-256 (ES256)")


def load_pem(data: bytes, kid: str | None = None) -> VerificationKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyConfigError("the file is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    return VerificationKey(key, algorithm_for(key), kid)


def load_jwks(text: str) -> dict[str, VerificationKey]:
    """The keys of a JWKS document by ``kid``. Each needs a ``kid``; ``alg`` and ``use``, if set, must fit."""
    try:
        entries = json.loads(text)["keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyConfigError('a JWKS file must be a JSON object {"keys": [...]}') from exc
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise KeyConfigError("every key of the JWKS needs a 'kid'")
        expected = {"RSA": "RS256", "EC": "ES256"}.get(entry.get("kty"))
        if expected is None:
            raise KeyConfigError(f"JWKS key {kid!r}: only RSA and EC public keys, not {entry.get('kty')!r}")
        if entry.get("alg", expected) != expected:
            raise KeyConfigError(f"JWKS key {kid!r} says alg {entry['alg']!r}, but its key type allows {expected}")
        if "d" in entry:
            raise KeyConfigError(f"JWKS key {kid!r} is a private key; publish only the public part")
        if entry.get("use", "sig") != "sig":
            raise KeyConfigError(f"JWKS key {kid!r} is not a signing key (use={entry.get('use')!r})")
        try:
            key = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise KeyConfigError(f"JWKS key {kid!r} cannot be loaded: {exc}") from exc
        algorithm = algorithm_for(key)
        if kid in keys:
            raise KeyConfigError(f"the JWKS has two keys with kid {kid!r}")
        keys[kid] = VerificationKey(key, algorithm, kid)
    return keys


class PublicKeys:
    """The configured public keys: an optional default (PEM) and a JWKS by ``kid``, reloaded on change."""

    def __init__(self, default: VerificationKey | None = None, jwks_path: Path | None = None) -> None:
        self.default = default
        self._jwks_path = jwks_path
        self._by_kid: dict[str, VerificationKey] = {}
        self._mtime: int | None = None
        self._lock = threading.Lock()
        self.generation = 0
        """Bumped at every reload: tokens verified under an older key set are verified again."""
        if jwks_path is not None:
            self._reload()

    @classmethod
    def from_files(cls, pem: Path | None, jwks: Path | None) -> PublicKeys | None:
        """``None`` when neither file is configured. Raises ``KeyConfigError`` for a bad file."""
        if pem is None and jwks is None:
            return None
        try:
            default = load_pem(pem.read_bytes()) if pem is not None else None
        except OSError as exc:
            raise KeyConfigError(f"cannot read the public key file {pem}: {exc.strerror}") from exc
        return cls(default, jwks)

    def find(self, kid: str | None) -> VerificationKey | None:
        """The key for ``kid``; without a ``kid``, the PEM key, or the JWKS's only key."""
        if kid is None:
            if self.default is not None:
                return self.default
            return next(iter(self._by_kid.values())) if len(self._by_kid) == 1 else None
        found = self._by_kid.get(kid)
        if found is None and self._changed():
            try:
                self._reload()
            except KeyConfigError as exc:  # e.g. caught mid-write: keep serving the keys we have
                log.warning("the JWKS file changed but cannot be loaded: %s", exc)
            found = self._by_kid.get(kid)
        return found

    def _changed(self) -> bool:
        if self._jwks_path is None:
            return False
        try:
            return os.stat(self._jwks_path).st_mtime_ns != self._mtime
        except OSError:
            return False

    def _reload(self) -> None:
        assert self._jwks_path is not None
        with self._lock:
            try:
                mtime = os.stat(self._jwks_path).st_mtime_ns
                text = self._jwks_path.read_text()
            except OSError as exc:
                raise KeyConfigError(f"cannot read the JWKS file {self._jwks_path}: {exc.strerror}") from exc
            self._by_kid = load_jwks(text)
            self._mtime = mtime
            self.generation += 1
