"""Token verification: HS256, RS256/ES256 from a PEM or a JWKS by kid; every attack fails loudly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncserver.auth.jwks import KeyConfigError, PublicKeys, load_jwks, load_pem
from syncserver.auth.tokens import TokenVerifier
from syncserver.errors import ApiError

ISS, AUD = "https://idp.example", "sync"
SECRET = "an-hs256-secret-of-reasonable-length-0123456789"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    data: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**data, "kid": kid, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "exp": now + 300, "sub": "d-17", "tid": "acme", "role": "driver", "ch": ["x"]}
    return {**base, **overrides}


def refused(verifier: TokenVerifier, token: str, code: str = "unauthorized") -> str:
    with pytest.raises(ApiError) as caught:
        verifier.verify(token)
    assert (caught.value.status, caught.value.code) == (401, code)
    return caught.value.message


def hs_forged_with(key_bytes: bytes, payload: dict[str, Any], kid: str | None = None) -> str:
    """An HS256 token whose HMAC key is ``key_bytes``: the classic algorithm-confusion forgery."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key_bytes, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_hs256_round_trip_and_claims() -> None:
    verifier = TokenVerifier(SECRET, ISS, AUD)
    principal = verifier.verify(verifier.issue("acme", "d-17", "driver", ("driver:d-17",)))
    assert (principal.tenant, principal.sub, principal.role, principal.channels) == (
        "acme",
        "d-17",
        "driver",
        ("driver:d-17",),
    )


def test_rs256_from_a_pem_file(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(None, ISS, AUD, public_keys=PublicKeys(load_pem(pem(rsa_key))))
    principal = verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))
    assert principal.sub == "d-17"
    with pytest.raises(ValueError, match="no HMAC secret"):
        verifier.issue("acme", "x", "driver")


def test_es256_from_a_jwks_chosen_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(rsa_key, "rsa-1", alg="RS256", use="sig"), jwk(ec_key, "ec-1")]}))
    verifier = TokenVerifier(SECRET, ISS, AUD, public_keys=PublicKeys(jwks_path=path))
    assert verifier.verify(jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})).sub == "d-17"
    assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})).sub == "d-17"
    # The HMAC secret still verifies tokens without a kid.
    assert verifier.verify(verifier.issue("acme", "ops", "dispatcher")).role == "dispatcher"
    # A kid the JWKS does not have, or a key of the wrong kid.
    refused(verifier, jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "nope"}))
    refused(verifier, jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"}))


def test_a_rotated_jwks_is_picked_up_without_a_restart(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(ec_key, "old")]}))
    verifier = TokenVerifier(None, ISS, AUD, public_keys=PublicKeys(jwks_path=path))
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), new_key, algorithm="ES256", headers={"kid": "new"})
    refused(verifier, token)
    path.write_text(json.dumps({"keys": [jwk(ec_key, "old"), jwk(new_key, "new")]}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verifier.verify(token).sub == "d-17"


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        ("expired", "token_expired"),
        ("wrong audience", "unauthorized"),
        ("wrong issuer", "unauthorized"),
        ("not yet valid", "unauthorized"),
        ("no exp", "unauthorized"),
        ("forged", "unauthorized"),
    ],
)
def test_bad_claims_and_signatures_are_refused(rsa_key: rsa.RSAPrivateKey, problem: str, code: str) -> None:
    verifier = TokenVerifier(None, ISS, AUD, leeway_s=30, public_keys=PublicKeys(load_pem(pem(rsa_key))))
    now = int(time.time())
    payloads = {
        "expired": claims(exp=now - 31),
        "wrong audience": claims(aud="other"),
        "wrong issuer": claims(iss="https://evil.example"),
        "not yet valid": claims(nbf=now + 120),
        "no exp": {k: v for k, v in claims().items() if k != "exp"},
        "forged": claims(),
    }
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048) if problem == "forged" else rsa_key
    refused(verifier, jwt.encode(payloads[problem], signer, algorithm="RS256"), code)


def test_the_leeway_is_small_but_real(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(None, ISS, AUD, leeway_s=30, public_keys=PublicKeys(load_pem(pem(rsa_key))))
    assert verifier.verify(jwt.encode(claims(exp=int(time.time()) - 10), rsa_key, algorithm="RS256"))


def test_alg_none_is_refused_for_every_key_kind(rsa_key: rsa.RSAPrivateKey) -> None:
    for verifier in (
        TokenVerifier(SECRET, ISS, AUD),
        TokenVerifier(None, ISS, AUD, public_keys=PublicKeys(load_pem(pem(rsa_key)))),
    ):
        refused(verifier, jwt.encode(claims(), None, algorithm="none"))
        refused(verifier, jwt.encode(claims(), None, algorithm="none", headers={"kid": "k"}))


def test_hs_rs_confusion_is_refused(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    public_pem = pem(rsa_key)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(rsa_key, "rsa-1")]}))
    for verifier in (
        TokenVerifier(None, ISS, AUD, public_keys=PublicKeys(load_pem(public_pem))),
        TokenVerifier(SECRET, ISS, AUD, public_keys=PublicKeys(load_pem(public_pem))),
        TokenVerifier(SECRET, ISS, AUD, public_keys=PublicKeys(jwks_path=path)),
    ):
        # HMAC keyed with the public key, which every attacker has.
        refused(verifier, hs_forged_with(public_pem, claims()))
        refused(verifier, hs_forged_with(public_pem, claims(), kid="rsa-1"))
    # And the reverse: an RS256 header cannot select the HMAC secret.
    hs_only = TokenVerifier(SECRET, ISS, AUD)
    refused(hs_only, jwt.encode(claims(), rsa_key, algorithm="RS256"))
    assert "no key" in refused(hs_only, hs_forged_with(SECRET.encode(), claims(), kid="any"))


def test_key_files_we_refuse(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyConfigError, match="2048"):
        load_pem(pem(weak))
    with pytest.raises(KeyConfigError, match="P-256"):
        load_pem(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(KeyConfigError, match="PEM public key"):
        load_pem(b"not a key")
    with pytest.raises(KeyConfigError, match="only RSA and EC"):
        load_jwks(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key))
    with pytest.raises(KeyConfigError, match="private key"):
        load_jwks(json.dumps({"keys": [{**private, "kid": "p"}]}))
    with pytest.raises(KeyConfigError, match="alg"):
        load_jwks(json.dumps({"keys": [jwk(rsa_key, "r", alg="HS256")]}))
    with pytest.raises(KeyConfigError, match="kid"):
        load_jwks(json.dumps({"keys": [{k: v for k, v in jwk(rsa_key, "r").items() if k != "kid"}]}))
    with pytest.raises(KeyConfigError, match="signing"):
        load_jwks(json.dumps({"keys": [jwk(rsa_key, "r", use="enc")]}))
    assert "key" not in repr(load_pem(pem(rsa_key))).lower().replace("verificationkey", "")


def test_a_verified_token_is_remembered_but_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(SECRET, ISS, AUD, leeway_s=0)
    token = jwt.encode(claims(exp=int(time.time()) + 60), SECRET, algorithm="HS256")
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        decoded.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    assert verifier.verify(token).sub == "d-17"
    assert verifier.verify(token).sub == "d-17"
    assert decoded == [token]  # the second request skipped the signature check
    # Another token (even for the same user) is checked on its own.
    other = jwt.encode(claims(exp=int(time.time()) + 61), SECRET, algorithm="HS256")
    assert verifier.verify(other).sub == "d-17"
    assert decoded == [token, other]
    # Past its exp, the remembered token is refused like any expired one.
    later = time.time() + 120
    monkeypatch.setattr("syncserver.auth.tokens.time.time", lambda: later)
    refused(verifier, token, "token_expired")


def test_a_remembered_token_is_verified_again_after_the_jwks_changes(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(ec_key, "old")]}))
    verifier = TokenVerifier(None, ISS, AUD, public_keys=PublicKeys(jwks_path=path))
    old_token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "old"})
    assert verifier.verify(old_token).sub == "d-17"
    # The operator retires "old" and publishes "new"; a token with the new kid makes the server reload.
    new_key = ec.generate_private_key(ec.SECP256R1())
    path.write_text(json.dumps({"keys": [jwk(new_key, "new")]}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verifier.verify(jwt.encode(claims(), new_key, algorithm="ES256", headers={"kid": "new"})).sub == "d-17"
    refused(verifier, old_token)
