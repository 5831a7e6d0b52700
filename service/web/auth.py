"""Who is labelling: accounts, tokens, signed sessions and cross-site request forgery checks.

Why signed cookies and not server-side sessions: several replicas may serve the page (a
Kubernetes Deployment); a session is ``base64(json) . HMAC-SHA256`` under
``web_secret_key`` and holds the labeller, its expiry and its CSRF token, so any replica
checks it alone. State-changing requests must carry that CSRF token (header
``X-CSRF-Token`` or form field ``csrf``) and, when the browser sends one, an ``Origin``
equal to the page's own: a forged cross-site POST has neither. Passwords are stored as
scrypt hashes (``finkvra web --hash-password``); tokens are compared in constant time.
No secret is ever written into a page: the CSRF token is per session and not a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Auth",
    "Session",
    "hash_password",
    "verify_password",
]

COOKIE = "finkvra_session"
#: scrypt cost: 2**14 x 8 x 1 (OWASP's minimum), ~16 MB and ~50 ms per check.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password``: what ``web_accounts`` holds."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a `hash_password` string (False for any malformed one)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Session:
    """A signed-in labeller: name, expiry (unix seconds) and the session's CSRF token."""

    labeller: str
    expires: float
    csrf: str
    bearer: bool = False  # signed in by an Authorization header: no cookie, no CSRF risk


class Auth:
    """Checks credentials and issues/reads sessions.

    Parameters
    ----------
    accounts
        labeller → scrypt hash (``Settings.web_accounts``, secrets unwrapped).
    tokens
        labeller → token (``Settings.web_tokens``).
    secret_key
        Signs sessions; None: a random key (sessions end with the process).
    session_seconds
        How long a login lasts.
    default_labeller
        Without accounts or tokens (loopback only), everybody is this labeller.
    """

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        *,
        secret_key: str | None = None,
        session_seconds: float = 43200,
        default_labeller: str = "web",
    ) -> None:
        self.accounts = dict(accounts or {})
        self.tokens = dict(tokens or {})
        self._key = (secret_key or secrets.token_hex(32)).encode()
        self.session_seconds = float(session_seconds)
        self.default_labeller = default_labeller

    @classmethod
    def from_settings(cls, settings: Any, default_labeller: str = "web") -> Auth:
        """The settings' ``web_*`` fields, secrets unwrapped only here."""
        key = settings.web_secret_key.get_secret_value() if settings.web_secret_key else None
        return cls(
            {n: v.get_secret_value() for n, v in settings.web_accounts.items()},
            {n: v.get_secret_value() for n, v in settings.web_tokens.items()},
            secret_key=key,
            session_seconds=settings.web_session_seconds,
            default_labeller=default_labeller,
        )

    @property
    def required(self) -> bool:
        """Whether anyone must sign in (accounts or tokens configured)."""
        return bool(self.accounts or self.tokens)

    # ----------------------------------------------------------------- credentials

    def check_password(self, labeller: str, password: str) -> bool:
        stored = self.accounts.get(labeller)
        if stored is None:
            verify_password(password, hash_password("x" * 12, salt=b"\0" * 16))  # same time
            return False
        return verify_password(password, stored)

    def labeller_for_token(self, token: str) -> str | None:
        """The labeller whose token this is, or None (every token compared: constant time)."""
        found = None
        for labeller, expected in self.tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = labeller
        return found

    # ----------------------------------------------------------------- sessions

    def issue(self, labeller: str, now: float | None = None) -> tuple[str, Session]:
        """A new session cookie value for ``labeller`` and the session it holds."""
        now = time.time() if now is None else now
        session = Session(labeller, now + self.session_seconds, secrets.token_urlsafe(24))
        payload = _b64(
            json.dumps({"u": session.labeller, "e": session.expires, "c": session.csrf}).encode()
        )
        return f"{payload}.{self._sign(payload)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value; None when absent, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["u"]), float(data["e"]), str(data["c"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        if self.required and session.labeller not in self.accounts | self.tokens:
            return None  # an account removed since
        return session

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent), session.csrf)
