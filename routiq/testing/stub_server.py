"""What every vendor stand-in shares: a threaded HTTP server on 127.0.0.1, a request log, a fault queue,
a fixed answer for every request, and a data clock. Stdlib only (no Django).

A stand-in subclasses ``StubServer`` and keeps only its vendor's protocol in
``_respond(method, path, query, headers, body)``: it returns the body of a 200 (a dict or list is sent as
JSON, bytes as they are, a str as text/plain) or a ``Reply``, and raises ``StubError`` for an error answer.
``path`` has no query string and no trailing slash; ``query`` is the decoded (key, value) pairs in order,
repeats kept; ``headers`` is the request's own header object, so ``headers.get`` ignores case as HTTP does.

The server binds its port on construction, so ``base_url`` is known before ``start()``; ``with`` starts and
stops it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit
from urllib.request import Request, urlopen

DEFAULT_CLOCK = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
JSON = "application/json; charset=utf-8"
# A 200 whose body is not JSON (sent as JSON): what a proxy or a half-deployed vendor answers ("not_json").
NOT_JSON = b"<html><body><h1>Service temporarily unavailable</h1></body></html>"


class StubError(Exception):
    """Short-circuits a request into an error answer (``body`` as in ``Reply``)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


@dataclass
class Reply:
    body: Any  # dict/list: JSON; bytes: as they are (e.g. a truncated JSON fault); str: text/plain
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # runs once the answer is sent, as a vendor's background job would


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string or a trailing slash
    query: list[tuple[str, str]]  # decoded, in order, repeats kept (e.g. Cliniko's q[] once per filter)
    headers: dict[str, str]
    body: bytes = b""
    at: float = 0.0  # time.monotonic() on arrival, so tests can check pacing

    def params(self, key: str) -> list[str]:
        return [v for k, v in self.query if k == key]

    def param(self, key: str) -> str | None:
        return next((v for k, v in self.query if k == key), None)


@dataclass
class Fault:
    kind: str
    remaining: int
    applies: Callable[[str], bool]  # to a request path
    status: int
    seconds: float
    skip: int = field(default=0, kw_only=True)  # matching requests let through first (schedule_fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not block stop()
    allow_reuse_address = True
    stub: StubServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # client hung up (e.g. a timeout test)
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.stub._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET  # the stand-in answers, e.g. with a JSON 404


class StubServer:
    fault_kinds: frozenset[str] = frozenset()  # what queue_faults accepts; the stand-in answers them
    api_root = ""  # appended to the origin to make base_url, e.g. Cliniko's "/v1"

    def __init__(self, *, port: int = 0, clock: datetime = DEFAULT_CLOCK) -> None:
        self.clock = clock
        self.requests: list[Any] = []
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._override: Reply | None = None
        self._stopping = threading.Event()  # cuts pauses ("delay" faults) short on stop()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.base_url = self.origin + self.api_root
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=type(self).__name__, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_until_interrupted(self) -> None:
        """Serve in the foreground until Ctrl-C (the ``python -m`` entries behind ``make run``)."""
        with self:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass

    # -- clock, log, faults ----------------------------------------------------------------------------
    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move the data clock forward, e.g. ``advance(seconds=1)`` or ``advance(days=2)``."""
        with self._lock:
            self.clock += timedelta(seconds=seconds, **delta)
            return self.clock

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def queue_faults(self, kind: str, count: int = 1, *, status: int = 503, seconds: float = 1.0,
                     path_contains: str = "") -> None:
        """The next ``count`` requests whose path contains ``path_contains`` misbehave as ``kind`` says (one
        of ``fault_kinds``; the stand-in's docstring says what each does)."""
        self._queue_fault(kind, count, status=status, seconds=seconds, applies=lambda path: path_contains in path)

    def _queue_fault(self, kind: str, count: int, *, status: int, seconds: float,
                     applies: Callable[[str], bool]) -> None:
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(self.fault_kinds)}")
        with self._lock:
            self._faults.append(Fault(kind, count, applies, status, seconds))

    def schedule_fault(self, kind: str, *, at: int, path_contains: str = "", status: int = 503,
                       seconds: float = 1.0) -> None:
        """Request number ``at`` (0-based) of those from now on whose path contains ``path_contains``
        misbehaves as ``kind`` says: a fault schedule for property-based tests. Two faults due on the same
        request fire one after the other (the second on the next matching request)."""
        if at < 0:
            raise ValueError("at counts requests from now: 0 or more")
        self._queue_fault(kind, 1, status=status, seconds=seconds, applies=lambda path: path_contains in path)
        with self._lock:
            self._faults[-1].skip = at

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            due = None
            for fault in self._faults:
                if not fault.applies(path):
                    continue
                if fault.skip > 0:  # every scheduled fault counts every matching request
                    fault.skip -= 1
                elif due is None:
                    due = fault
            if due is not None:
                due.remaining -= 1
                if due.remaining <= 0:
                    self._faults.remove(due)
            return due

    def _pause(self, seconds: float) -> None:
        """Hold the answer (a slow vendor, for timeout tests); stop() ends the wait."""
        self._stopping.wait(seconds)

    def answer_with(self, status: int, body: Any) -> None:
        """Answer every request (still recorded) with ``status`` and ``body`` (a str is sent as text/plain)."""
        self._override = Reply(body, status)

    def redirect_to(self, url: str, status: int = 302) -> None:
        """Answer every request (still recorded) with a redirect to ``url``."""
        self._override = Reply("", status, {"Location": url})

    # -- HTTP ------------------------------------------------------------------------------------------
    def _record(self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                body: bytes) -> Any:
        return RecordedRequest(method, path, query, headers, body, time.monotonic())

    def _respond(self, method: str, path: str, query: list[tuple[str, str]], headers: Any,
                 body: bytes) -> Reply | Any:
        raise NotImplementedError

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""  # read it all, so closing the socket does not RST the client
        url = urlsplit(h.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qsl(url.query, keep_blank_values=True)
        with self._lock:
            self.requests.append(self._record(h.command, path, query, dict(h.headers.items()), body))
        try:
            reply = self._override or self._respond(h.command, path, query, h.headers, body)
        except StubError as err:
            reply = Reply(err.body, err.status, err.headers)
        except Exception as exc:  # a stand-in bug: answer 500, then let handle_error print the traceback
            self._send(h, Reply({"message": f"stub error: {exc!r}"}, 500))
            raise
        reply = reply if isinstance(reply, Reply) else Reply(reply)
        self._send(h, reply)
        if reply.after is not None:
            reply.after()

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        body, content_type = reply.body, JSON
        if isinstance(body, str):
            body, content_type = body.encode(), "text/plain; charset=utf-8"
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(body)
        except ConnectionError:  # the client already gave up (timeout tests)
            pass


def post_delivery(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> tuple[int, bytes]:
    """POST a vendor's webhook delivery to ``url``; returns (status, body), 4xx/5xx too, or (0, error) when
    the receiver could not be reached. Shared by the stand-ins that send webhooks."""
    request = Request(url, data=body, method="POST", headers=headers)  # noqa: S310 - a local test URL
    try:
        with urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except OSError as exc:  # HTTPError (4xx/5xx) carries the answer; other errors are the receiver's failure
        if hasattr(exc, "code") and hasattr(exc, "read"):
            return exc.code, exc.read()
        return 0, str(exc).encode()
