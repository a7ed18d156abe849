"""Bearer-token authentication: a signed JWT names the tenant, user, role and channels.

Litestar's ``AbstractAuthenticationMiddleware`` does the plumbing; PyJWT does
the verification. We do not use Litestar's ``JWTAuth`` because it verifies
with a single secret and algorithm, and deployments also need asymmetric keys
chosen by ``kid`` (see docs/adr/0003-auth.md and 0007-asymmetric-tokens.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cachetools import TTLCache
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from syncproto import errors
from syncserver.auth.jwks import PublicKeys
from syncserver.errors import ApiError
from syncserver.keys import devsecrets
from syncserver.settings import Settings

Role = Literal["driver", "dispatcher", "admin"]
HMAC_ALGORITHMS: tuple[str, ...] = ("HS256",)
VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_TTL_S = 300.0
"""How many verified tokens are remembered, and for how long at most (each is still refused once it expires)."""
ROLES: tuple[Role, ...] = ("driver", "dispatcher", "admin")


@dataclass(frozen=True)
class Principal:
    tenant: str
    sub: str
    role: Role
    channels: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TokenVerifier:
    """Verifies bearer tokens: signature, expiry and not-before (with leeway), issuer and audience.

    Two kinds of key, each with its own algorithm allow-list:

    * ``secret``: an HMAC secret for ``HS256`` (``None`` turns HMAC off); tokens
      signed with it carry no ``kid``.
    * ``public_keys``: RSA or EC public keys (``RS256``/``ES256``), one from a
      PEM file (no ``kid`` needed) or several from a JWKS file, chosen by ``kid``.

    The token header's ``alg`` must be allowed for the key that header selects,
    so ``alg: none`` and HS/RS confusion (an RSA public key used as an HMAC
    secret) are refused before any signature is checked.
    """

    secret: str | None
    issuer: str
    audience: str
    leeway_s: int = 30
    algorithms: tuple[str, ...] = HMAC_ALGORITHMS
    """Algorithms allowed with ``secret``."""
    public_keys: PublicKeys | None = None
    _verified: TTLCache[str, tuple[Principal, float, int]] = field(
        default_factory=lambda: TTLCache(maxsize=VERIFIED_CACHE_SIZE, ttl=VERIFIED_CACHE_TTL_S),
        init=False,
        repr=False,
        compare=False,
    )
    """Tokens whose signature and claims were checked, with their ``exp`` and the key set's generation: a
    device sends the same token on every request, and checking its signature again cost about as much as
    a small download's database read."""

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; ``token_expired`` or ``unauthorized`` otherwise.

        A token verified before (the same bytes, under the same key set) skips the signature and claim
        checks, but not its expiry.
        """
        generation = self.public_keys.generation if self.public_keys is not None else 0
        cached = self._verified.get(token)
        if cached is not None and cached[2] == generation:
            principal, expires, _ = cached
            if time.time() > expires + self.leeway_s:
                self._verified.pop(token, None)
                raise ApiError(401, errors.TOKEN_EXPIRED, "the token has expired")
            return principal
        principal, expires = self._verify(token)
        self._verified[token] = (principal, expires, generation)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        key, algorithm = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ApiError(401, errors.TOKEN_EXPIRED, "the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise ApiError(401, errors.UNAUTHORIZED, f"the token is not valid: {type(exc).__name__}") from exc
        return principal_from_claims(claims), float(claims["exp"])

    def _key_for(self, token: str) -> tuple[Any, str]:
        """The key the header selects and the algorithm it claims, if that algorithm is allowed for that key."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ApiError(401, errors.UNAUTHORIZED, f"the token is not valid: {type(exc).__name__}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise ApiError(401, errors.UNAUTHORIZED, "the token header is not valid")
        if kid is None and self.secret is not None and algorithm in self.algorithms:
            return self.secret, algorithm
        found = self.public_keys.find(kid) if self.public_keys is not None else None
        if found is None:
            raise ApiError(401, errors.UNAUTHORIZED, "no key of this server verifies this token")
        if algorithm != found.algorithm:
            raise ApiError(401, errors.UNAUTHORIZED, f"algorithm {algorithm!r} is not allowed for this key")
        return found.key, algorithm

    def issue(
        self, tenant: str, sub: str, role: Role, channels: tuple[str, ...] = (), ttl_s: int = 30 * 24 * 3600
    ) -> str:
        """An HS256 token signed with ``secret`` (development and tests; production tokens come from an IdP)."""
        if self.secret is None:
            raise ValueError("this verifier has no HMAC secret to sign tokens with")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl_s,
            "tid": tenant,
            "sub": sub,
            "role": role,
            "ch": list(channels),
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier a deployment configures (see the README's configuration table).

    With a public key or JWKS file and no explicit ``SYNC_JWT_SECRET(_FILE)``,
    HMAC is off: no development secret is created or read.
    """
    public_keys = PublicKeys.from_files(settings.jwt_public_key_file, settings.jwt_jwks_file)
    secret = devsecrets.jwt_secret(settings) if devsecrets.hmac_tokens(settings) else None
    return TokenVerifier(
        secret, settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway_s, public_keys=public_keys
    )


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    tenant, sub, role, channels = claims.get("tid"), claims.get("sub"), claims.get("role"), claims.get("ch", [])
    if not isinstance(tenant, str) or not tenant:
        raise ApiError(401, errors.UNAUTHORIZED, "the token has no tenant ('tid' claim)")
    if not isinstance(sub, str) or not sub:
        raise ApiError(401, errors.UNAUTHORIZED, "the token has no subject ('sub' claim)")
    if role not in ROLES:
        raise ApiError(401, errors.UNAUTHORIZED, f"the token's role must be one of {', '.join(ROLES)}")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ApiError(401, errors.UNAUTHORIZED, "the token's 'ch' claim must be a list of strings")
    return Principal(tenant, sub, role, tuple(channels))


def bearer_token(header: str | None) -> str:
    if not header:
        raise ApiError(401, errors.UNAUTHORIZED, "missing Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, errors.UNAUTHORIZED, "the Authorization header must be 'Bearer <token>'")
    return token.strip()


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        verifier: TokenVerifier = connection.app.state.verifier
        principal = verifier.verify(bearer_token(connection.headers.get("authorization")))
        return AuthenticationResult(user=principal, auth=None)


def auth_middleware(exclude: list[str]) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, exclude=exclude)
