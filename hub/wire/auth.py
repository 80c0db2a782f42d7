"""Server-side authentication and role checks for the hub and key holders.

Every RPC except gRPC health checking and reflection carries
``authorization: Bearer <jwt>`` (``client_sdk.wire.auth``).  :class:`AuthInterceptor`
verifies it before the servicer runs and guarantees:

- Only EdDSA (Ed25519) signatures are accepted: ``alg: none``, HMAC (even
  keyed with the public key bytes), RSA and ECDSA are refused.
- ``iss`` names a registered, enabled institution and ``sub`` equals it; the
  signature verifies with that institution's registered key.  No registry
  holds a weak key: :class:`Institution` refuses small-order and
  non-canonical Ed25519 keys (``client_sdk.wire.auth.check_public_key``), so
  a registry file holding one does not load, and a database row holding one
  (registered before the check existed) authenticates nobody.
- ``aud`` is one string equal to this server's audience (RFC 7519 allows an
  array; a token carrying one would be good at several servers, so an array
  is refused even when it holds only this audience); ``exp``, ``iat``, ``nbf`` and ``jti``
  are required; the token is not expired, not used before ``nbf``/``iat``
  (beyond :data:`LEEWAY` seconds) and lives at most ``MAX_TOKEN_TTL`` seconds.
- A ``jti`` is accepted once per issuer while its token is alive (a
  :class:`ReplayGuard`).  The hub keeps token ids in its database
  (``hub.storage.registry.DatabaseReplayGuard``), shared by its replicas and kept across
  restarts; a key holder keeps them in a SQLite file in its state directory
  (``hub.keyholder.server.SeenTokenFile``).  :class:`ReplayCache` is the in-memory
  guard for a server built without either (tests, embedding).
- The caller's role is allowed for the method by a per-method table; methods
  missing from the table are denied.
- The servicer reads the caller with :func:`current_principal`.  A stream
  outlives the check made when it opened, so a streaming servicer calls
  :func:`current_principal_still_valid` for every message: once the token's
  ``exp`` (plus :data:`LEEWAY`) has passed the stream ends UNAUTHENTICATED
  ("token expired during the stream"), once the institution is disabled or
  unregistered PERMISSION_DENIED / UNAUTHENTICATED.  The check reads ``exp``
  from the verified claims and the institution from the registry, whose
  lookups the servers cache (the hub for ``REGISTRY_TTL`` = 2 s).
- While the token of a method listed as read-only is verified,
  :func:`read_only_call` is true (the hub's replay guard keeps working on a
  full disk for those, ADR 0003).

Failures raise :class:`~client_sdk.core.errors.AuthenticationError`
(UNAUTHENTICATED) or :class:`~client_sdk.core.errors.PermissionDenied`
(PERMISSION_DENIED); ``hub.wire.status.ErrorInterceptor`` turns them into statuses.
Messages never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import heapq
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client_sdk.core.errors import (
    AuthenticationError,
    ConfigurationError,
    PermissionDenied,
    Unavailable,
)
from client_sdk.core.vocabulary import ROLES, Principal
from client_sdk.wire.auth import JWT_ALGORITHM, MAX_TOKEN_TTL, check_public_key
from hub.wire.rpc import around

__all__ = [
    "EXEMPT_SERVICES",
    "LEEWAY",
    "ROLES",
    "AuthInterceptor",
    "Institution",
    "InstitutionRegistry",
    "JsonFileRegistry",
    "ReplayCache",
    "ReplayGuard",
    "TokenVerifier",
    "VerifiedToken",
    "current_principal",
    "current_principal_still_valid",
    "dump_registry",
    "is_institution_id",
    "parse_registry",
    "read_only_call",
]

log = logging.getLogger(__name__)

#: Clock skew tolerated between an institution and a server, seconds.
LEEWAY = 10
#: Services callable without a token (load balancers and tooling use them).
EXEMPT_SERVICES: frozenset[str] = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
MAX_TOKEN_CHARS = 4096
_JTI = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_INSTITUTION_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REGISTRY_FORMAT_KEY = "institutions"


@dataclass(frozen=True)
class Institution:
    """A registered institution: who may sign tokens, and in which role."""

    id: str
    name: str
    role: str
    public_key: bytes
    disabled: bool = False

    def __post_init__(self) -> None:
        if not _INSTITUTION_ID.match(self.id):
            raise ConfigurationError("institution id must be 1..64 characters of [a-z0-9._-]")
        if self.role not in ROLES:
            raise ConfigurationError(f"institution {self.id}: role must be one of {ROLES}")
        try:
            check_public_key(self.public_key)
        except ConfigurationError as exc:
            raise ConfigurationError(f"institution {self.id}: {exc}") from None


def is_institution_id(value: str) -> bool:
    """True when ``value`` is a well-formed institution id (registered or not)."""
    return bool(_INSTITUTION_ID.match(value))


class InstitutionRegistry(Protocol):
    """Where a server looks institutions up (the hub: its database; key holders: a file)."""

    def lookup(self, institution_id: str) -> Institution | None:
        """The institution with this id, or None if it is not registered."""
        ...


# --- the JSON registry file (``fraudhub institution export``) -------------------


def parse_registry(text: str, source: str = "registry") -> list[Institution]:
    """Parse ``{"institutions": [{"id", "name", "role", "public_key", "disabled"}]}``.

    ``public_key`` is the raw 32-byte Ed25519 key in standard base64.  Raises
    ConfigurationError naming the entry and field that is wrong.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source}: not JSON (line {exc.lineno})") from None
    entries = data.get(REGISTRY_FORMAT_KEY) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{source}: expected an object with an 'institutions' list")
    institutions: list[Institution] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        where = f"{source}: institutions[{position}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: not an object")
        try:
            key = base64.b64decode(str(entry["public_key"]), validate=True)
            disabled = entry.get("disabled", False)
            if not isinstance(disabled, bool):
                raise ConfigurationError(f"{where}.disabled: must be true or false")
            institution = Institution(
                id=str(entry["id"]),
                name=str(entry.get("name", "")),
                role=str(entry["role"]),
                public_key=key,
                disabled=disabled,
            )
        except KeyError as exc:
            raise ConfigurationError(f"{where}: missing field {exc.args[0]!r}") from None
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{where}.public_key: not base64") from None
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        if institution.id in seen:
            raise ConfigurationError(f"{where}.id: duplicate id {institution.id!r}")
        seen.add(institution.id)
        institutions.append(institution)
    return institutions


def dump_registry(institutions: Sequence[Institution]) -> str:
    """The JSON registry text for ``institutions`` (what :func:`parse_registry` reads)."""
    return json.dumps(
        {
            REGISTRY_FORMAT_KEY: [
                {
                    "id": i.id,
                    "name": i.name,
                    "role": i.role,
                    "public_key": base64.b64encode(i.public_key).decode("ascii"),
                    "disabled": i.disabled,
                }
                for i in sorted(institutions, key=lambda i: i.id)
            ]
        },
        indent=2,
    )


class JsonFileRegistry:
    """An :class:`InstitutionRegistry` read from a JSON registry file.

    The file is re-read when its modification time or size changes, so an
    operator disables an institution at a key holder by replacing the file,
    without a restart.  A file that stops parsing keeps the last good
    registry and logs an error.  Raises ConfigurationError at construction if
    the file is unreadable or invalid.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, Institution] = {}
        self._load(strict=True)

    def _load(self, *, strict: bool) -> None:
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            institutions = parse_registry(self._path.read_text("utf-8"), str(self._path))
        except OSError as exc:
            if strict:
                raise ConfigurationError(f"cannot read {self._path}: {exc.strerror}") from None
            log.error("institution registry %s unreadable; keeping the last one", self._path)
            return
        except ConfigurationError as exc:
            if strict:
                raise
            log.error("institution registry invalid, keeping the last one: %s", exc)
            return
        self._by_id = {i.id: i for i in institutions}
        self._stamp = stamp

    def lookup(self, institution_id: str) -> Institution | None:
        with self._lock:
            self._load(strict=False)
            return self._by_id.get(institution_id)


# --- replay protection -----------------------------------------------------------


class ReplayGuard(Protocol):
    """Remembers ``(issuer, jti)`` pairs until their token expires."""

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> None:
        """Record the pair; raise AuthenticationError if it was seen before."""
        ...


class ReplayCache:
    """In-memory, thread-safe :class:`ReplayGuard` for one server process.

    Entries are dropped once their token has expired (plus leeway), so the
    cache holds at most the tokens of the last ``MAX_TOKEN_TTL + LEEWAY``
    seconds.  Only tokens with a valid signature are recorded, so only
    registered institutions can fill it; past ``max_entries`` it refuses new
    tokens (Unavailable, retryable) rather than forget live ones.
    """

    def __init__(
        self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> None:
        key = (issuer, jti)
        forget_after = expires_at + LEEWAY
        with self._lock:
            now = self._clock()
            while self._expiry and self._expiry[0][0] < now:
                _, old = heapq.heappop(self._expiry)
                self._seen.pop(old, None)
            if key in self._seen:
                raise AuthenticationError("token already used (replayed jti)")
            if len(self._seen) >= self._max:
                raise Unavailable("too many live tokens; retry later")
            self._seen[key] = forget_after
            heapq.heappush(self._expiry, (forget_after, key))


# --- token verification -----------------------------------------------------------


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified token established: the caller, and until when (Unix time)."""

    principal: Principal
    expires_at: float


class TokenVerifier:
    """Verifies bearer tokens for one server audience (see the module docstring)."""

    def __init__(
        self,
        registry: InstitutionRegistry,
        audience: str,
        replay: ReplayGuard | None = None,
    ) -> None:
        self._registry = registry
        self._audience = audience
        self._replay: ReplayGuard = replay if replay is not None else ReplayCache()

    @property
    def audience(self) -> str:
        return self._audience

    def verify(self, token: str) -> Principal:
        """The principal a token authenticates.

        Raises AuthenticationError for a malformed, forged, expired, replayed or
        foreign token, PermissionDenied for a disabled institution.
        """
        return self.authenticate(token).principal

    def authenticate(self, token: str) -> VerifiedToken:
        """:meth:`verify`, also returning when the token expires (for streams)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError("token too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthenticationError("malformed token") from None
        # Checked before any key is touched, so no other algorithm's code path runs.
        if header.get("alg") != JWT_ALGORITHM:
            raise AuthenticationError(f"token algorithm must be {JWT_ALGORITHM}")
        if not isinstance(unverified.get("aud"), str):
            # pyjwt accepts an array holding our audience; one token, one server.
            raise AuthenticationError("token audience (aud) must be one string, not a list")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise AuthenticationError("token has no issuer")
        try:
            institution = self._registry.lookup(issuer)
        except ConfigurationError as exc:
            # A registry row that no longer validates (a weak key registered
            # before keys were checked) authenticates nobody.
            log.error("registry entry refused: %s", exc)
            raise AuthenticationError("institution's registered key is refused") from None
        if institution is None:
            raise AuthenticationError("unknown institution")
        claims = self._decode(token, institution)
        if claims.get("sub") != issuer:
            raise AuthenticationError("token subject must equal its issuer")
        if claims["exp"] - claims["iat"] > MAX_TOKEN_TTL + LEEWAY:
            raise AuthenticationError(f"token lifetime exceeds {MAX_TOKEN_TTL}s")
        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI.match(jti):
            raise AuthenticationError("token id (jti) malformed")
        if institution.disabled:
            raise PermissionDenied("institution is disabled")
        self._replay.check_and_store(issuer, jti, float(claims["exp"]))
        return VerifiedToken(
            Principal(institution=institution.id, role=institution.role), float(claims["exp"])
        )

    def recheck(self, verified: VerifiedToken) -> None:
        """Check that a token verified earlier (a stream's) still authorizes its caller.

        Raises AuthenticationError once it expired (beyond :data:`LEEWAY`) or its
        institution left the registry, PermissionDenied once the institution is
        disabled.  Costs a clock read and one (cached) registry lookup.
        """
        if time.time() > verified.expires_at + LEEWAY:
            raise AuthenticationError(
                "token expired during the stream; open a new stream with a fresh token"
            )
        try:
            institution = self._registry.lookup(verified.principal.institution)
        except ConfigurationError:
            institution = None
        if institution is None:
            raise AuthenticationError("institution is no longer registered")
        if institution.disabled:
            raise PermissionDenied("institution was disabled during the stream")

    def _decode(self, token: str, institution: Institution) -> dict[str, Any]:
        key = Ed25519PublicKey.from_public_bytes(institution.public_key)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=self._audience,
                issuer=institution.id,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("token is for another server (aud)") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token lacks claim {exc.claim!r}") from None
        except jwt.PyJWTError:
            raise AuthenticationError("token rejected") from None
        now = time.time()
        # pyjwt checks iat only in recent versions; check it here regardless.
        if claims["iat"] > now + LEEWAY:
            raise AuthenticationError("token issued in the future")
        return claims


# --- the interceptor ---------------------------------------------------------------

_CALLER: contextvars.ContextVar[tuple[VerifiedToken, TokenVerifier]] = contextvars.ContextVar(
    "fraudhub_caller"
)


def _caller() -> tuple[VerifiedToken, TokenVerifier]:
    try:
        return _CALLER.get()
    except LookupError:
        raise AuthenticationError("no authenticated caller") from None


_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fraudhub_read_only_call", default=False
)


def read_only_call() -> bool:
    """True while a token of a method the interceptor lists as read-only is verified.

    A replay guard may then settle for a weaker record when its storage
    refuses writes (``hub.storage.registry.DatabaseReplayGuard``).
    """
    return _READ_ONLY.get()


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served.

    Raises AuthenticationError outside an authenticated call (a servicer
    registered without :class:`AuthInterceptor` fails closed).
    """
    return _caller()[0].principal


def current_principal_still_valid() -> Principal:
    """:func:`current_principal`, re-checked: call it for every message of a stream.

    Raises AuthenticationError once the call's token has expired or its
    institution is no longer registered, PermissionDenied once the institution
    is disabled (:meth:`TokenVerifier.recheck`).
    """
    verified, verifier = _caller()
    verifier.recheck(verified)
    return verified.principal


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    values = [v for k, v in metadata or () if k == "authorization"]
    if len(values) != 1:
        raise AuthenticationError("exactly one authorization header is required")
    value = values[0]
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("authorization must be 'Bearer <token>'")
    return token.strip()


def _service_of(method: str) -> str:
    # "/package.Service/Method" -> "package.Service"
    return method.lstrip("/").partition("/")[0]


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every call and checks the caller's role per method.

    ``method_roles`` maps full method names (``/fraudhub.v1.KeyHolder/BlindEvaluate``)
    to the roles allowed to call them.  Install it after
    ``hub.wire.status.ErrorInterceptor``, which maps its errors to statuses.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        method_roles: Mapping[str, Collection[str]],
        exempt_services: Collection[str] = EXEMPT_SERVICES,
        read_only_methods: Collection[str] = (),
    ) -> None:
        unknown = {r for roles in method_roles.values() for r in roles} - set(ROLES)
        if unknown:
            raise ConfigurationError(f"unknown roles in method table: {sorted(unknown)}")
        self._verifier = verifier
        self._roles = {m: frozenset(r) for m, r in method_roles.items()}
        self._exempt = frozenset(exempt_services)
        self._read_only = frozenset(read_only_methods)

    def authorize(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Principal:
        """The caller of ``method`` if its token verifies and its role is allowed."""
        return self._authorize(method, metadata).principal

    def _authorize(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> VerifiedToken:
        token = _bearer_token(metadata)
        marker = _READ_ONLY.set(method in self._read_only)
        try:
            verified = self._verifier.authenticate(token)
        finally:
            _READ_ONLY.reset(marker)
        principal = verified.principal
        allowed = self._roles.get(method)
        if allowed is None or principal.role not in allowed:
            log.info("denied %s to %s (role %s)", method, principal.institution, principal.role)
            raise PermissionDenied(f"role {principal.role} may not call {method}")
        return verified

    def _enter(self, ctx: contextvars.Context, method: str, context: grpc.ServicerContext) -> None:
        verified = self._authorize(method, context.invocation_metadata())
        ctx.run(_CALLER.set, (verified, self._verifier))

    def intercept_service(
        self,
        continuation: Any,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or _service_of(method) in self._exempt:
            return handler

        def enter(context: grpc.ServicerContext) -> contextvars.Context:
            # The servicer (and each step of its response stream) runs in a
            # context that holds the caller, whichever thread resumes it.
            ctx = contextvars.copy_context()
            self._enter(ctx, method, context)
            return ctx

        return around(handler, enter=enter)
