"""TF Serving's REST API over a threaded HTTP/1.1 server from the standard library.

URLs, bodies and status codes follow TF Serving: GET /v1/models/{name}[/versions/{v}|/labels/{l}]
[/metadata] and POST .../{name}[...]:predict|classify|regress, errors as {"error": "..."}. Each
connection has its own thread and keeps alive between requests; the thread blocks while the
batcher runs its request, which is what lets concurrent requests merge.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from typing import Any

from kerasflow.serving import metrics, protocol, rest_codec
from kerasflow.serving.errors import Code, ServingError, http_status, invalid_argument
from kerasflow.serving.manager import ModelManager
from kerasflow.serving.metrics import ServingMetrics
from kerasflow.serving.request_logger import RequestLogger
from kerasflow.serving.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
)

log = logging.getLogger(__name__)

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
_API_PREFIX = re.compile(r"/v1/", re.IGNORECASE)


def _status_name(http: int) -> str:
    """The canonical code name of an answer that no ServingError produced."""
    return {200: "OK", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED"}.get(http, "INTERNAL")


_INT64_MAX = 2**63 - 1
# How long and how much a refused oversized body is drained so the client can read the 413.
_DRAIN_SECONDS = 2.0
_DRAIN_BYTES = 256 << 20


class _TooLarge(Exception):
    pass


class _Route:
    __slots__ = ("model", "version", "label", "action")

    def __init__(self, model: str, version: int | None, label: str | None, action: str):
        self.model, self.version, self.label, self.action = model, version, label, action


def _parse_route(method: str, path: str) -> _Route:
    """Splits an API path into model, version, label and action, as TF Serving parses it."""
    malformed = invalid_argument(f"Malformed request: {method} {path}")
    if method == "POST":
        match = _PREDICT_PATH.fullmatch(path)
        action = match.group(4).lower() if match else ""
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(path)
        action = "metadata" if match and match.group(4) else "status"
    else:
        match = None
    if match is None:
        raise malformed
    model = urllib.parse.unquote(match.group(1) or "")
    version = None
    if match.group(2):
        version = int(match.group(2))
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {match.group(2)} to numeric.")
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    if not model:
        raise invalid_argument("Missing model name in request.")
    return _Route(model, version, label, action)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kerasflow-serving"
    # Small responses must not wait for Nagle's algorithm.
    disable_nagle_algorithm = True
    # A client that stalls mid-request or idles on a kept-alive connection frees its thread.
    timeout = 120
    server: _HTTPServer
    # Bytes of a refused body still to come (None: unknown, chunked).
    _unread: int | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        # Errors raised by the request parser itself (bad request line, headers): JSON too.
        self.close_connection = True
        self._send_json(code, {"error": message or explain or self.responses[code][0]})

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        reason = self.responses.get(status, ("",))[0]
        closing = self.close_connection or self.server.app.closing
        if closing:
            self.close_connection = True
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if closing else "")
            + "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def _read_body(self) -> bytes:
        limit = self.server.app.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise invalid_argument(f"bad Content-Length: {length_text}") from None
        if length < 0:
            self.close_connection = True
            raise invalid_argument(f"bad Content-Length: {length_text}")
        if length > limit:
            self._unread = length
            raise _TooLarge(length)
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise invalid_argument("bad chunked transfer encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self._unread = None
                raise _TooLarge(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _drain_after_refusal(self) -> None:
        # Reading (and dropping) the rest of a refused body lets the client finish sending and
        # read our 413 instead of seeing a reset connection.
        remaining = getattr(self, "_unread", None)
        budget = _DRAIN_BYTES if remaining is None else min(remaining, _DRAIN_BYTES)
        deadline = time.monotonic() + _DRAIN_SECONDS
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            while budget > 0 and time.monotonic() < deadline:
                try:
                    chunk = self.connection.recv(min(budget, 1 << 16))
                except TimeoutError:
                    continue
                if not chunk:
                    break
                budget -= len(chunk)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        app.enter()
        started = time.perf_counter()
        self._observed = None
        code = None
        try:
            path = urllib.parse.urlsplit(self.path).path
            too_large = False
            try:
                # Read the body whatever the route, so a keep-alive connection stays in sync.
                body = self._read_body()
                if method == "GET" and path == app.metrics_path:
                    self._send_text(200, app.metrics.exposition(), metrics.CONTENT_TYPE)
                    return
                if not _API_PREFIX.match(path):
                    status, payload = 404, {"error": f"Not found: {method} {path}"}
                else:
                    status, payload = 200, self._serve(method, path, body)
            except ServingError as exc:
                status, payload = http_status(exc.code), {"error": exc.message}
                code = exc.code.name
            except _TooLarge as exc:
                too_large = True
                self.close_connection = True
                status, payload = (
                    413,
                    {
                        "error": f"request body of {exc.args[0]} bytes exceeds the limit of "
                        f"{app.max_request_bytes} bytes"
                    },
                )
            except Exception as exc:
                log.exception("error serving %s %s", method, path)
                status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
            # Counted before the answer leaves: a client that has its answer sees it counted.
            if app.metrics is not None and method == "POST":
                self._count(app.metrics, path, code or _status_name(status), started)
            self._send_json(status, payload)
            if too_large:
                self._drain_after_refusal()
        finally:
            app.exit()

    def _count(self, serving_metrics: ServingMetrics, path: str, status: str, started: float):
        """Counts an inference request (predict, classify, regress) with how it ended."""
        observed = self._observed
        if observed is None:
            try:
                route = _parse_route("POST", path)
            except ServingError:
                return  # not an inference route
            observed = (route.model, route.version, "", route.action)
        model, version, signature, api = observed
        serving_metrics.observe(
            model=model,
            version=version,
            signature=signature,
            api=f"rest:{api}",
            status=status,
            started=started,
        )

    def _send_text(self, status: int, body: bytes, content_type: str) -> None:
        reason = self.responses.get(status, ("",))[0]
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def _serve(self, method: str, path: str, body: bytes) -> Any:
        route = _parse_route(method, path)
        manager = self.server.app.manager
        if method == "GET":
            if route.action == "metadata":
                servable = manager.get_servable(route.model, route.version, route.label)
                return protocol.metadata_json(servable)
            statuses = manager.model_status(route.model, route.version, route.label)
            return protocol.to_json_dict(protocol.status_response(statuses))
        doc = rest_codec.parse_body(body)
        if route.action == "predict":
            return self._predict(manager, route, doc)
        return self._classify_or_regress(manager, route, doc)

    def _predict(self, manager: ModelManager, route: _Route, doc: dict) -> Any:
        name = rest_codec.signature_name(doc) or DEFAULT_SIGNATURE
        servable = manager.get_servable(route.model, route.version, route.label)
        signature = servable.signature(name)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        self._observed = (route.model, servable.version, name, "predict")
        inputs, row_format = rest_codec.decode_predict(doc, signature.inputs)
        started = time.perf_counter()
        outputs = signature.predict(inputs)
        timeout = self.server.app.timeout_seconds
        if timeout > 0 and time.perf_counter() - started > timeout:
            # As TF Serving's per-call deadline (--rest_api_timeout_in_ms) ends the run.
            raise ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Timed out: the model run took longer than {timeout * 1000:.0f} ms",
            )
        request_log = self.server.app.request_log
        if request_log is not None:
            request_log.offer(
                model=route.model,
                version=servable.version,
                signature=name,
                method="predict",
                inputs=inputs,
                outputs=outputs,
            )
        return rest_codec.encode_predict(outputs, row_format)

    def _classify_or_regress(self, manager: ModelManager, route: _Route, doc: dict) -> Any:
        name = rest_codec.signature_name(doc) or DEFAULT_SIGNATURE
        examples = doc.get("examples")
        if not isinstance(examples, list) or not examples:
            raise invalid_argument("'examples' must be a non-empty list of objects")
        servable = manager.get_servable(route.model, route.version, route.label)
        self._observed = (route.model, servable.version, name, route.action)
        signature = servable.signature(name)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {name}")
        kind, wanted = (
            ("classification", CLASSIFY_METHOD)
            if route.action == "classify"
            else ("regression", REGRESS_METHOD)
        )
        if signature.method_name != wanted:
            raise invalid_argument(
                f"Expected {kind} signature method_name to be {wanted}. "
                f"Was: {signature.method_name}"
            )
        raise ServingError(Code.UNIMPLEMENTED, f"{kind} signatures are not supported here")

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256
    app: RestServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up mid-answer are routine; the stdlib would print a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("connection from %s ended: %s", client_address, error)
        else:
            log.exception("error on the connection from %s", client_address)

    def finish_request(self, request, client_address) -> None:
        self.app.track(request, True)
        try:
            super().finish_request(request, client_address)
        finally:
            self.app.track(request, False)


class RestServer:
    """The REST frontend: one HTTP server thread plus one thread per connection.

    Args:
        manager: where models are looked up.
        host: address to bind.
        port: port to bind (0 picks a free one).
        max_request_bytes: larger bodies get 413.
        metrics: where answered inference requests are counted (None: not counted).
        metrics_path: GET path answering the metrics in Prometheus' text format (None: none).
        timeout_seconds: inference calls whose model run takes longer answer 504 (<= 0: never).
        request_log: where answered predict requests are offered for logging (None: nowhere).
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str,
        port: int,
        max_request_bytes: int,
        *,
        metrics: ServingMetrics | None = None,
        metrics_path: str | None = None,
        timeout_seconds: float = 0.0,
        request_log: RequestLogger | None = None,
    ):
        self.manager = manager
        self.request_log = request_log
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self.timeout_seconds = timeout_seconds
        self.closing = False
        self._host, self._port = host, port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._in_flight = 0
        self._connections: set[socket.socket] = set()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def start(self) -> None:
        """Binds the port and serves in a background thread.

        Raises:
            OSError: when the address cannot be bound.
        """
        server_class = _HTTPServer
        if ":" in self._host:
            server_class = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((self._host, self._port), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="rest-accept"
        )
        self._thread.daemon = True
        self._thread.start()

    def enter(self) -> None:
        """Counts a request in flight."""
        with self._cond:
            self._in_flight += 1

    def exit(self) -> None:
        """Counts a request done."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def track(self, connection: socket.socket, open_: bool) -> None:
        """Remembers open connections so idle keep-alive ones can be closed at shutdown."""
        with self._cond:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting, lets requests in flight finish (up to `grace` s), closes the rest."""
        if self._httpd is None:
            return
        self.closing = True
        self._httpd.shutdown()
        self._httpd.server_close()
        deadline = time.monotonic() + grace
        with self._cond:
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
