"""The local Functions host runs real entry points with the Functions host's semantics.

The app under test is ``tests/fixtures/hostapp``: a timer, a queue function and three HTTP
functions whose side effects are JSON lines in files named by app settings. Storage is a
real Azurite. Timers run on an injected clock the tests move; nothing waits by sleeping.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.storage.queue import QueueClient

from devstack.azurite import Azurite
from devstack.clock import SettableClock
from devstack.host import (
    FunctionNotFoundError,
    HostConfigurationError,
    LocalFunctionsHost,
    parse_timespan,
)
from tests.loopback import wait_for

APP = Path(__file__).resolve().parent.parent / "fixtures" / "hostapp"
T = TypeVar("T")


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    """One in-memory Azurite for this module's hosts."""
    with Azurite() as server:
        yield server


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class App:
    """Settings and observation points of one test's copy of the fixture app."""

    def __init__(self, tmp_path: Path, storage: Azurite) -> None:
        self.storage = storage
        self.queue_name = "work" + uuid.uuid4().hex[:12]
        self.timer_log = tmp_path / "timer.jsonl"
        self.queue_log = tmp_path / "queue.jsonl"
        self.timer_gate = tmp_path / "timer.gate"
        self.queue_gate = tmp_path / "queue.gate"
        self.settings = {
            "AzureWebJobsStorage": storage.connection_string,
            "TEST_SCHEDULE": "0 * * * * *",
            "WORK_QUEUE": self.queue_name,
            "TIMER_LOG": str(self.timer_log),
            "QUEUE_LOG": str(self.queue_log),
            "TIMER_GATE": str(self.timer_gate),
            "QUEUE_GATE": str(self.queue_gate),
        }

    def host(self, **options: Any) -> LocalFunctionsHost:
        options.setdefault("run_timers_at_start", False)
        options.setdefault("schedule_status", {})
        options.setdefault("clock", SettableClock(datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)))
        return LocalFunctionsHost(APP, self.settings, **options)

    def queue(self, suffix: str = "") -> QueueClient:
        return QueueClient.from_connection_string(
            self.storage.connection_string, self.queue_name + suffix
        )

    def timer_runs(self) -> list[dict[str, Any]]:
        return lines(self.timer_log)

    def attempts(self, event: str = "start") -> list[dict[str, Any]]:
        return [entry for entry in lines(self.queue_log) if entry["event"] == event]


@pytest.fixture
def app(tmp_path: Path, storage: Azurite) -> App:
    return App(tmp_path, storage)


def queue_is_empty(client: QueueClient) -> bool:
    """No message left, visible or not (Azurite counts invisible ones too)."""
    return client.get_queue_properties().approximate_message_count == 0


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    parts = http.client.urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=10, context=context)
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# --- configuration -------------------------------------------------------------------------


def test_missing_app_setting_is_named(app: App) -> None:
    """A %Setting% with no value fails start with the setting's name, leaving nothing running."""
    del app.settings["TEST_SCHEDULE"]
    host = app.host()
    with pytest.raises(HostConfigurationError, match="TEST_SCHEDULE"):
        host.start()
    with pytest.raises(FunctionNotFoundError):
        host.trigger_timer("tick")


def test_timespans() -> None:
    """host.json timespans read as seconds; bare numbers as milliseconds."""
    assert parse_timespan("00:00:30", "x") == 30
    assert parse_timespan("00:00:00.200", "x") == pytest.approx(0.2)
    assert parse_timespan("1.02:00:00", "x") == 26 * 3600
    assert parse_timespan(2000, "x") == 2
    with pytest.raises(HostConfigurationError):
        parse_timespan("30s", "x")


# --- timers ----------------------------------------------------------------------------------


def test_scheduled_run_on_time_is_not_past_due(app: App) -> None:
    """The clock reaching a slot runs the timer once, with past_due False."""
    clock = SettableClock(datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC))
    with app.host(clock=clock):
        clock.set(datetime(2026, 11, 26, 10, 1, 0, tzinfo=UTC))
        runs = wait_for(lambda: [r for r in app.timer_runs() if r["event"] == "end"], "a run")
    assert [r["past_due"] for r in runs] == [False]


def test_start_after_missed_slot_runs_past_due(app: App) -> None:
    """A host starting after a slot passed since the recorded run catches up with past_due."""
    status: dict[str, datetime] = {}
    clock = SettableClock(datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC))
    with app.host(clock=clock, schedule_status=status, run_timers_at_start=True):
        wait_for(lambda: len(app.timer_runs()) == 2, "the startup run")
    clock.set(datetime(2026, 11, 26, 10, 3, 10, tzinfo=UTC))  # 10:01, 10:02, 10:03 missed
    with app.host(clock=clock, schedule_status=status, run_timers_at_start=False):
        wait_for(lambda: len(app.timer_runs()) == 4, "the catch-up run")
    assert [r["past_due"] for r in app.timer_runs() if r["event"] == "end"] == [False, True]


def test_start_without_missed_slot_runs_only_when_asked(app: App) -> None:
    """With no slot missed, only run_timers_at_start makes a start run, and it is not past due."""
    clock = SettableClock(datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC))
    with app.host(clock=clock, run_timers_at_start=True) as host:
        wait_for(lambda: len(app.timer_runs()) == 2, "the startup run")
        outcome = host.trigger_timer("tick", past_due=True)
    assert outcome.succeeded
    assert outcome.outcome == "Succeeded"
    assert [r["past_due"] for r in app.timer_runs() if r["event"] == "end"] == [False, True]


def test_overrun_gives_one_past_due_run_and_runs_never_overlap(app: App) -> None:
    """Slots passing during a run give one past-due run after it; no two runs ever overlap."""
    clock = SettableClock(datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC))
    app.timer_gate.touch()
    with app.host(clock=clock) as host:
        clock.set(datetime(2026, 11, 26, 10, 1, 0, tzinfo=UTC))
        wait_for(lambda: app.timer_runs(), "the held run to start")
        clock.set(datetime(2026, 11, 26, 10, 3, 30, tzinfo=UTC))  # 10:02 and 10:03 overrun
        manual: list[Any] = []
        contender = threading.Thread(target=lambda: manual.append(host.trigger_timer("tick")))
        contender.start()
        app.timer_gate.unlink()
        contender.join(timeout=30)
        wait_for(
            lambda: len([r for r in app.timer_runs() if r["event"] == "end"]) == 3,
            "the held, manual and catch-up runs",
        )
    runs = app.timer_runs()
    assert [r["event"] for r in runs] == ["start", "end"] * 3
    assert not any(r.get("overlapping") for r in runs)
    assert runs[1]["past_due"] is False  # the held run was on time
    assert sorted(r["past_due"] for r in runs[2:] if r["event"] == "end") == [False, True]
    assert manual[0].succeeded


def test_trigger_timer_unknown_name(app: App) -> None:
    """Asking for a timer that does not exist (or is not a timer) is a clear error."""
    with app.host() as host, pytest.raises(FunctionNotFoundError, match="things"):
        host.trigger_timer("things")


# --- queues ----------------------------------------------------------------------------------


def test_good_message_processed_once_and_deleted(app: App) -> None:
    """A base64 message reaches main decoded, with dequeue_count 1, and is deleted."""
    with app.host():
        queue = app.queue()
        wait_for(lambda: _exists(queue), "the host to create the queue")
        queue.send_message(b64("hello"))
        wait_for(lambda: app.attempts("done"), "the message to be processed")
        wait_for(lambda: queue_is_empty(queue), "the message to be deleted")
    done = app.attempts("done")
    assert [(d["body"], d["dequeue_count"]) for d in done] == [("hello", 1)]
    assert len(app.attempts("start")) == 1


def test_failing_message_is_retried_then_poisoned(app: App) -> None:
    """A failing message is tried maxDequeueCount (3) times, then its original text is poisoned."""
    with app.host():
        queue = app.queue()
        wait_for(lambda: _exists(queue), "the host to create the queue")
        queue.send_message(b64("fail"))
        poison = app.queue("-poison")
        moved = wait_for(lambda: _exists(poison) and poison.peek_messages(5), "the poison queue")
        wait_for(lambda: queue_is_empty(queue), "the original to be deleted")
    assert [m.content for m in moved] == [b64("fail")]
    assert [a["dequeue_count"] for a in app.attempts()] == [1, 2, 3]


def test_message_that_is_not_base64_is_poisoned_without_invoking(app: App) -> None:
    """Text the base64 messageEncoding cannot decode fails each try and ends in the poison queue."""
    with app.host():
        queue = app.queue()
        wait_for(lambda: _exists(queue), "the host to create the queue")
        queue.send_message("not base64 at all!")
        poison = app.queue("-poison")
        moved = wait_for(lambda: _exists(poison) and poison.peek_messages(5), "the poison queue")
    assert [m.content for m in moved] == ["not base64 at all!"]
    assert app.attempts() == []


def test_batch_of_messages_each_processed_once(app: App) -> None:
    """More messages than batchSize are all processed, each exactly once, and deleted."""
    bodies = [f"item-{n}" for n in range(10)]
    queue = app.queue()
    queue.create_queue()
    for body in bodies:
        queue.send_message(b64(body))
    with app.host():
        wait_for(lambda: len(app.attempts("done")) >= len(bodies), "every message")
        wait_for(lambda: queue_is_empty(queue), "every message to be deleted")
    assert sorted(d["body"] for d in app.attempts("done")) == sorted(bodies)
    assert len(app.attempts("start")) == len(bodies)


def test_stop_waits_for_in_flight_invocation(app: App) -> None:
    """stop() stops polling but lets the running invocation finish and settle its message."""
    app.queue_gate.touch()
    queue = app.queue()
    stopper: threading.Thread | None = None
    host = app.host().start()
    try:
        wait_for(lambda: _exists(queue), "the host to create the queue")
        queue.send_message(b64("hold"))
        wait_for(lambda: app.attempts(), "the held invocation to start")
        url = host.base_url
        finished_when_stop_returned: list[list[dict[str, Any]]] = []

        def stop() -> None:
            host.stop()
            finished_when_stop_returned.append(app.attempts("done"))

        stopper = threading.Thread(target=stop)
        stopper.start()
        wait_for(lambda: host.stopping and _refused(url), "stop to close the HTTP server")
        assert stopper.is_alive()  # everything else is stopped; the held invocation is not
    finally:
        app.queue_gate.unlink()
        if stopper is None:
            host.stop()
    stopper.join(timeout=30)
    assert not stopper.is_alive()
    assert [[d["body"] for d in done] for done in finished_when_stop_returned] == [["hold"]]
    assert queue_is_empty(queue)
    queue.send_message(b64("after stop"))
    assert [m.content for m in queue.peek_messages(5)] == [b64("after stop")]


def _refused(url: str) -> bool:
    try:
        request(f"{url}/things/1")
    except OSError:
        return True
    return False


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
    except Exception:  # ResourceNotFoundError until the host creates it
        return False
    return True


# --- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def web(app: App) -> Iterator[LocalFunctionsHost]:
    with app.host() as host:
        yield host


def test_route_matches_case_insensitively_with_params_and_query(web: LocalFunctionsHost) -> None:
    """/THINGS/42 hits things/{id}; route params, query args, method, headers, body arrive."""
    status, headers, body = request(
        f"{web.base_url}/THINGS/42?Size=large&empty=",
        method="PUT",
        body=b"payload",
        headers={"x-test": "yes"},
    )
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["x-echo"] == "things"
    echo = json.loads(body)
    assert echo["route_params"] == {"id": "42"}
    assert echo["params"] == {"Size": "large", "empty": ""}
    assert echo["method"] == "PUT"
    assert echo["body"] == "payload"
    assert echo["x_test"] == "yes"
    assert echo["url"].endswith("/THINGS/42?Size=large&empty=")


def test_unknown_route_is_404(web: LocalFunctionsHost) -> None:
    """A path no route matches answers 404 (the host's own JSON error), as does a route
    prefix the app removed."""
    status, headers, body = request(f"{web.base_url}/nothing/here")
    assert status == 404
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body)["error"]["code"] == headers["x-ms-error-code"] == "NotFound"
    assert request(f"{web.base_url}/api/things/42")[0] == 404
    assert request(f"{web.base_url}/things/42/extra")[0] == 404


def test_verb_not_listed_does_not_match(web: LocalFunctionsHost) -> None:
    """A POST-only function answers POST; GET finds no route (404), as the real host does."""
    status, _, body = request(f"{web.base_url}/submit", method="POST", body=b"hi")
    assert (status, body) == (201, b"hi")
    assert request(f"{web.base_url}/submit")[0] == 404
    assert request(f"{web.base_url}/Submit", method="DELETE")[0] == 404


def test_catch_all_route_captures_the_rest(web: LocalFunctionsHost) -> None:
    """files/{*path} captures the remaining segments, slashes included, decoded."""
    assert request(f"{web.base_url}/files/a/b%20c/d.txt")[2] == b"a/b c/d.txt"
    assert request(f"{web.base_url}/files")[0] == 200


def test_function_exception_is_500_and_host_keeps_serving(web: LocalFunctionsHost) -> None:
    """An exception in a function answers 500 and the next request is served normally."""
    assert request(f"{web.base_url}/things/boom")[0] == 500
    assert request(f"{web.base_url}/things/1")[0] == 200


def raw_exchange(base_url: str, data: bytes) -> bytes:
    """Send ``data`` as is over one connection; everything the host answers until it closes."""
    address = http.client.urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: abc\r\n\r\n", id="content-length-not-a-number"),
        pytest.param(b"Content-Length: -5\r\n\r\nhello", id="content-length-negative"),
        pytest.param(
            b"Content-Length: 99999999999999999999\r\n\r\n", id="content-length-overflows"
        ),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            id="chunk-size-not-hex",
        ),
    ],
)
def test_malformed_request_framing_is_400_and_host_keeps_serving(
    web: LocalFunctionsHost, framing: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """A body length the host cannot read answers 400 (the host's own JSON error, fixed text)
    and closes; no traceback."""
    answer = raw_exchange(web.base_url, b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    assert status_line.startswith("HTTP/1.1 400 ")
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["error"]["code"] == headers["x-ms-error-code"] == "BadRequest"
    assert "Traceback" not in capsys.readouterr().err  # socketserver prints one for a crash
    assert request(f"{web.base_url}/things/1")[0] == 200


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: 1000000000000000\r\n\r\nhello", id="content-length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
            id="chunk-size",
        ),
    ],
)
def test_a_body_over_the_request_length_limit_is_413_before_it_is_read(
    web: LocalFunctionsHost, framing: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """A huge, well-formed Content-Length or chunk size (a petabyte, a terabyte) answers 413
    (the host's own JSON error) and closes, as the real host does, instead of allocating it
    (MemoryError)."""
    answer = raw_exchange(web.base_url, b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 413 ")
    assert "Connection: close" in header_lines
    assert json.loads(body)["error"]["code"] == "RequestEntityTooLarge"
    assert "Traceback" not in capsys.readouterr().err
    assert request(f"{web.base_url}/things/1")[0] == 200


def test_tls_serves_https_with_generated_certificate(app: App, tmp_path: Path) -> None:
    """With tls, the host serves https that verifies against its self-signed certificate."""
    with app.host(tls=True, tls_dir=tmp_path / "tls") as host:
        assert host.base_url.startswith("https://127.0.0.1:")
        assert host.certificate_path is not None
        trusted = ssl.create_default_context(cafile=str(host.certificate_path))
        status, _, body = request(f"{host.base_url}/things/7", context=trusted)
        assert status == 200
        assert json.loads(body)["route_params"] == {"id": "7"}
        with pytest.raises(ssl.SSLCertVerificationError):
            request(f"{host.base_url}/things/7", context=ssl.create_default_context())
