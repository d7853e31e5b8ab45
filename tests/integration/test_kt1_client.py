"""The kt1 client against the simulated export stream over real HTTP."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pipelines.http import VendorAPIError
from pipelines.retry import RetryPolicy
from pipelines.simulator.kt1 import Kt1Server
from pipelines.sources.kt1.client import AckOutcome, Kt1Client
from pipelines.sources.kt1.extract import split_batches
from tests.support.kt1_support import BEFORE_ANY_DATA, TOKEN, small_world, start_server
from tests.support.polling import wait_for


def markers(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "type": "changenotification",
            "operation": "update",
            "date": "2024-01-01T00:00:00.000Z",
            "doc": {"id": f"doc-{i}", "type": "asset", "note": "x" * 40},
        }
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture
def server(world) -> Iterator[Kt1Server]:
    """A stream with nothing queued but what a test enqueues. Its 1 s long poll keeps a real
    wait (≥ 0.25 s counts as one) far from an immediate 500, even on a loaded machine.
    """
    srv = start_server(world, now=BEFORE_ANY_DATA, batch_size=10, long_poll_s=1.0)
    yield srv
    srv.stop()


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def client(server: Kt1Server, delays: list[float]) -> Iterator[Kt1Client]:
    c = Kt1Client(server.url, token=TOKEN, long_poll_s=server.long_poll_s, sleep=delays.append)
    yield c
    c.close()


def test_token_travels_in_the_header_never_in_the_url(server, client) -> None:
    server.enqueue(markers(3))
    batch = client.next_batch()
    assert batch is not None and client.acknowledge(batch.batch_id) is AckOutcome.ACKNOWLEDGED
    requests_seen = server.requests("/v2/stream")
    assert len(requests_seen) == 2
    for record in requests_seen:
        assert record.headers["x-access-token"] == TOKEN
        assert record.query == {} and TOKEN not in record.path


def test_a_gzip_body_and_a_plain_body_both_parse(server, client) -> None:
    server.enqueue(markers(20))
    zipped = client.next_batch()
    plain_client = Kt1Client(server.url, token=TOKEN, gzip=False, long_poll_s=server.long_poll_s)
    try:
        plain = plain_client.next_batch()
    finally:
        plain_client.close()
    assert zipped.compressed and not plain.compressed
    ids = [item["doc"]["id"] for item in zipped.items + plain.items]
    assert ids == [f"doc-{i}" for i in range(20)]
    first, second = server.requests("/v2/stream")
    assert "gzip" in first.headers["accept-encoding"]
    assert second.headers["accept-encoding"] == "identity"
    landed = split_batches([zipped, plain], datetime.now(UTC))
    assert landed.rows_by_table == {"changes": 20} and landed.quarantined == 0


def test_an_empty_queue_is_none_after_the_long_poll_not_an_error(server, client, delays) -> None:
    assert client.next_batch() is None
    assert server.stats()["empty_polls"] == 1
    assert client.stats.requests == 1 and client.stats.retries == 0 and delays == []
    assert client.stream.empty_polls == 1


def test_a_500_that_comes_back_at_once_is_an_error_and_is_backed_off(
    server, client, delays
) -> None:
    server.enqueue(markers(3))
    server.faults.update(status_5xx=500, next_5xx=2)  # immediate 500s, then the real answer
    batch = client.next_batch()
    assert batch is not None and [i["doc"]["id"] for i in batch.items] == [
        "doc-0",
        "doc-1",
        "doc-2",
    ]
    assert client.stats.retries == 2 and len(delays) == 2
    assert client.stream.empty_polls == 0


def test_a_500_that_keeps_coming_back_at_once_fails_with_one_line(server, delays) -> None:
    server.faults.update(status_5xx=500, rate_5xx=1.0)
    client = Kt1Client(
        server.url,
        token=TOKEN,
        long_poll_s=server.long_poll_s,
        retry=RetryPolicy(max_attempts=4),
        sleep=delays.append,
    )
    with pytest.raises(VendorAPIError) as caught:
        client.next_batch()
    message = str(caught.value)
    assert re.fullmatch(
        r"kt1 API GET /v2/stream failed after 4 attempts in [\d.]+s: "
        r"HTTP 500 INTERNAL_ERROR: Injected server error",
        message,
    ), message
    assert TOKEN not in message and "\n" not in message
    assert len(delays) == 3  # backed off between the four attempts
    assert client.stream.empty_polls == 0


def test_deleting_an_expired_batch_is_logged_not_fatal(server, client, caplog) -> None:
    server.enqueue(markers(3))
    batch = client.next_batch()
    # The redelivery window passes: the batch goes back to the queue.
    wait_for("no batch in flight", lambda: server.in_flight() == 0, 10, poll_s=0.05)
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.kt1.client"):
        assert client.acknowledge(batch.batch_id) is AckOutcome.EXPIRED
    assert "already expired, it will be redelivered" in caplog.text
    assert client.stream.acks_expired == 1 and client.stream.expired_ids == [batch.batch_id]
    again = client.next_batch()
    assert again.items == batch.items  # it did come back
    assert client.acknowledge(again.batch_id) is AckOutcome.ACKNOWLEDGED


def test_a_404_for_an_expired_id_is_treated_the_same(server, client) -> None:
    server.unknown_batch_status = 404  # a server that answers as the issue describes
    assert client.acknowledge("5f0000000000000000000000") is AckOutcome.EXPIRED
    assert client.stats.retries == 0


def test_delete_retries_a_transient_failure(server, client, delays) -> None:
    server.enqueue(markers(3))
    batch = client.next_batch()
    server.faults.update(status_5xx=503, next_5xx=1)
    assert client.acknowledge(batch.batch_id) is AckOutcome.ACKNOWLEDGED
    assert client.stats.retries == 1 and server.acknowledged_count() == 3


def test_a_wrong_token_fails_at_once_without_showing_it(server) -> None:
    secret = "not-the-token-7731"
    client = Kt1Client(server.url, token=secret, long_poll_s=server.long_poll_s)
    with pytest.raises(VendorAPIError) as caught:
        client.next_batch()
    assert caught.value.status == 401 and client.stats.retries == 0
    assert secret not in str(caught.value)
