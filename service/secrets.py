"""What is secret, and the one way every output hides it.

Secrets reach the service three ways: settings flagged ``secret`` (``kafka_password``,
``redis_url``, ``mlflow_uri``, ``lasair_token``, ``kafka_extra``, ``scored_kafka_extra``,
``digest_telegram_token``, ``digest_slack_webhook``), librdkafka options (inside
``kafka_extra`` or built from the settings) and URLs with credentials in them. A URL
flagged ``secret = "whole"`` (a Slack incoming webhook: its path is the credential) is
hidden whole but for its scheme and host, and its path is redacted from text too.
Every output goes through this module: logs (`secret_values` feeds the redaction
filter of `service.logs`, which also covers tracebacks), ``finkvra config show``
(`masked`), the Kafka configuration logged at start (`masked`), /metrics and /readyz
(`redact`) and the parameters logged to MLflow (`masked`).

Which librdkafka options are secret is librdkafka's own list: the properties flagged
``_RK_SENSITIVE`` in ``rdkafka_conf.c`` (plus those newer versions added), and, for
options of versions this list does not know yet, any name that says password, secret,
token, credential, private key or PEM key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "LIBRDKAFKA_SENSITIVE",
    "MASK",
    "WHOLE",
    "is_secret_option",
    "mask_url",
    "masked",
    "redact",
    "secret_values",
]

MASK = "***"
#: The ``secret`` flag of a URL setting that is a credential as a whole (webhook URLs).
WHOLE = "whole"

#: librdkafka properties flagged ``_RK_SENSITIVE`` (rdkafka_conf.c, 2.x), and the later
#: OAUTHBEARER/OIDC ones (client secret, assertion keys) that newer versions flag.
#: Except ``sasl.username``, which librdkafka flags too: the settings do not hold the
#: user name secret (``config show`` prints ``kafka_username``), and it is the first
#: thing an operator checks when authentication fails.
LIBRDKAFKA_SENSITIVE = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.assertion.private.key.file",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.ca.pem",
        "ssl.keystore.password",
    }
)

_SECRET_NAME = re.compile(
    r"password|passphrase|secret|token|credential|private|(^|[._])key($|[._])|\.pem$", re.IGNORECASE
)
#: Query parameters of a URL that carry a credential.
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret|key)=)[^&#]*")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S*$")
#: Shortest secret value redacted from text (shorter ones would blank ordinary words).
MIN_SECRET_LENGTH = 3


def is_secret_option(name: str) -> bool:
    """Whether a librdkafka (or similar ``a.b.c``) option's value must never be shown."""
    return name in LIBRDKAFKA_SENSITIVE or bool(_SECRET_NAME.search(str(name)))


def mask_url(url: str) -> str:
    """A URL as it may be shown: the password masked, a user-only userinfo (``redis://
    S3CR3T@host``, which Redis clients take as the password) masked whole, credential
    query parameters masked; host, port, path and database kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    masked_url = url
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        if ":" in userinfo:
            shown = f"{userinfo.split(':', 1)[0]}:{MASK}"
        else:
            shown = MASK if userinfo else ""
        masked_url = url.replace(parts.netloc, f"{shown}@{host}", 1)
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", masked_url)


def masked(value: Any, *, name: str | None = None, secret: bool = False) -> Any:
    """The one masking function: ``value`` as any output may show it.

    ``secret`` is the setting's own flag (``json_schema_extra={"secret": True}``, or
    ``"whole"`` for a URL that is a credential as a whole); a
    ``name`` that librdkafka calls sensitive is secret too. A secret URL keeps its host
    (`mask_url`), any other secret becomes ``'***'``. A mapping (a librdkafka
    configuration, ``kafka_extra``) is masked option by option; callables and loggers
    (librdkafka callbacks) are shown by type.
    """
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
        secret = secret or True
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): masked(v, name=str(k)) for k, v in value.items()}
    if callable(value) or isinstance(value, logging.Logger):
        return f"<{type(value).__name__}>"
    if secret or (name is not None and is_secret_option(name)):
        if isinstance(value, str) and _URL.match(value):
            return _mask_whole_url(value) if secret == WHOLE else mask_url(value)
        return MASK
    return value


def _mask_whole_url(url: str) -> str:
    """``https://hooks.slack.com/***``: only the scheme and host of an all-secret URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}/{MASK}" if parts.scheme and host else MASK


def secret_values(settings: Any) -> list[str]:
    """Every secret value in the settings, as it could appear in text (for `redact`).

    The values of secret-flagged settings, the credentials inside secret URLs (plain
    and percent-decoded) and the values of secret ``kafka_extra`` options.
    """
    values: list[str] = []
    for name, field in type(settings).model_fields.items():
        extra = field.json_schema_extra
        if not (isinstance(extra, dict) and extra.get("secret")):
            continue
        value = getattr(settings, name, None)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if value is None:
            continue
        if isinstance(value, Mapping):  # librdkafka options by name; SecretStr values always
            for key, item in value.items():
                if hasattr(item, "get_secret_value"):
                    values.append(str(item.get_secret_value()))
                elif is_secret_option(str(key)):
                    values.append(str(item))
        elif isinstance(value, str) and _URL.match(value) and extra.get("secret") == WHOLE:
            values += [value, *_whole_url_parts(value)]
        elif isinstance(value, str) and _URL.match(value):
            values += _url_credentials(value)
        else:
            values.append(str(value))
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def _whole_url_parts(url: str) -> list[str]:
    """The parts of an all-secret URL that text may show apart: its path (HTTP logs print
    ``POST /services/T0/B0/XYZ``) and, decoded, the same."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return []
    return [form for form in {path, unquote(path)} if path.strip("/")]


def _url_credentials(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [v for v in (parts.password, parts.username if parts.password is None else None) if v]
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(url)]
    return [form for value in found for form in {value, unquote(value)}]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``'***'`` (longest first)."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH},
                         key=len, reverse=True):  # fmt: skip
        text = text.replace(secret, MASK)
    return text
