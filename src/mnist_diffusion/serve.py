"""`mnist-diffusion serve`: a local page to watch digits form, complete strokes and interpolate.

A standard-library HTTP server (no web framework) serves one page shipped in the package
(`web/`) and a small JSON API. Each POST streams its results as JSON lines, one per sampler step,
so the page shows the predicted clean digit of every step as it is computed:

    POST /api/generate     {"digit", "guidance", "sampler", "steps", "seed", "pace_ms"}
    POST /api/complete     {"pixels": 784 ints 0-255, "known": 784 0/1, "digit" or null, "method", "steps", "seed"}
    POST /api/interpolate  {"mode": "seeds"|"digits", "digit", "seeds": [a, b], "digits": [a, b], "frames", "seed"}
    GET  /api/info         the model's classes, samplers, defaults and limits
    GET  /api/test-digit?seed=N   an MNIST test digit (or the model's own when no data is present)

Every request is checked whole before any work; a bad one gets HTTP 400 and `{"error": "..."}` in
one line, and the server keeps serving. One model is shared: its forward pass runs under a lock,
so concurrent requests interleave step by step and all finish; torch uses one thread.

What a hostile page or client cannot do:
- talk to it from another origin: a request whose `Origin` is not this server's page, or whose
  `Host` is not an address of this server (DNS rebinding), gets 403 before anything is read;
- hold it open: a request (its line, headers and body together) must arrive within
  `REQUEST_DEADLINE_S`, however slowly it trickles; every write times out (`READ_TIMEOUT_S`); at most
  `MAX_CONNECTIONS` connections are served at once, and when all are taken the one that has waited
  longest without finishing its request is dropped for a newcomer (the rest get 503 at once); at
  most `MAX_JOBS` jobs that run the network run at once (the rest get 503);
- make it compute for nobody: a job stops within one network pass of its client going away.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch

from .demo import DEFAULT_PACE_MS, MAX_PACE_MS, MAX_SEED, Demo, Job, RequestError, integer_field

MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 10.0  # a client not reading its answer this long is dropped
REQUEST_DEADLINE_S = 10.0  # the whole request, headers and body, however it is trickled
MAX_ECHO = 120  # characters of an offending value an error message repeats
MAX_CONNECTIONS = 32  # connections served at once; more are answered 503 without a thread
MAX_JOBS = 4  # sampling jobs at once (they share one network); more are answered 503
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}

__all__ = ["Demo", "DemoHandler", "DemoServer", "Job", "is_loopback", "make_server", "run_server"]


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, each receive allowed only the time left before the request's deadline,
    so a client trickling one byte at a time cannot hold the connection past it."""

    def __init__(self, connection: socket.socket, deadline: Callable[[], float]) -> None:
        super().__init__()
        self.connection, self.deadline = connection, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline() - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive before its deadline")
        self.connection.settimeout(left)
        return self.connection.recv_into(buffer)


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes
    timeout = READ_TIMEOUT_S  # on every read and write of the connection (StreamRequestHandler applies it)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is the user's
        pass

    def setup(self) -> None:
        super().setup()
        self.deadline = time.monotonic() + self.server.request_deadline_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, lambda: self.deadline))
        self.server.started_request(self.connection)

    def finish(self) -> None:
        self.server.finished_request(self.connection)
        super().finish()

    def _request_read(self) -> None:
        """The whole request is in: no deadline now, only the write timeout; its slot is no longer
        one a newcomer may take."""
        self.deadline = float("inf")
        self.connection.settimeout(self.timeout)
        self.server.finished_request(self.connection)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error, the standard library's own included (an unknown method, a malformed request
        line), as one JSON line with its headers; an unknown method is 405; echoed text is capped."""
        self.request_version = self.protocol_version  # answer a line with no version (HTTP/0.9) with headers
        self.close_connection = True
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command[:MAX_ECHO]!r} is not allowed"
        text = " ".join((message or HTTPStatus(code).phrase).split())
        body = json.dumps({"error": text[:MAX_ECHO] + ("..." if len(text) > MAX_ECHO else "")}).encode()
        self.send_response(code)
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, POST")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if not self._same_origin():
            return
        self._request_read()
        url = urlparse(self.path)
        if url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            self._send(HTTPStatus.OK, (resources.files("mnist_diffusion") / "web" / name).read_bytes(), content_type)
        elif url.path == "/api/info":
            self._send_json(HTTPStatus.OK, self.server.demo.info())
        elif url.path == "/api/test-digit":
            try:
                seed = integer_field({"seed": _int_or_text(parse_qs(url.query).get("seed", ["0"])[0])}, "seed", 0,
                                MAX_SEED)
                self._send_test_digit(seed)
            except RequestError as error:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def do_POST(self) -> None:
        if not self._same_origin():
            return
        streams = {"/api/generate": self.server.demo.generate, "/api/complete": self.server.demo.complete,
                   "/api/interpolate": self.server.demo.interpolate}
        path = urlparse(self.path).path
        if path not in streams:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
            return
        try:
            body = self._read_json()
            self._request_read()
        except TimeoutError:
            self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": f"the request body did not arrive within "
                                                                  f"{self.timeout:g} s"})
            return
        except RequestError as error:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": " ".join(str(error).split())})
            return
        if not self.server.job_slots.acquire(blocking=False):
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"the server is busy with {MAX_JOBS} requests; "
                                                                      f"try again in a moment"})
            return
        job = Job(client_gone=self._client_gone, on_finish=self.server.job_slots.release)
        lines = streams[path](body, job)
        try:
            pace_s = integer_field(body, "pace_ms", 0, MAX_PACE_MS, DEFAULT_PACE_MS) / 1000
            first = next(lines)  # validation happens before the first line: a refusal is still a 400
        except (RequestError, ValueError) as error:
            self.server.job_slots.release()  # no worker was started
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": " ".join(str(error).split())})
            return
        except StopIteration:  # the client went away before the first frame
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self._write_paced([first], lines, pace_s)
        except OSError:  # the page went away mid-stream (or stopped reading): closing `lines` cancels the job
            pass
        finally:
            lines.close()

    def _send_test_digit(self, seed: int) -> None:
        """A test digit; drawing one (no MNIST files) runs the network, so it takes a job slot."""
        if self.server.demo.test_images is not None:
            self._send_json(HTTPStatus.OK, self.server.demo.test_digit(seed))
        elif not self.server.job_slots.acquire(blocking=False):
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"the server is busy with {MAX_JOBS} requests; "
                                                                      f"try again in a moment"})
        else:
            try:
                self._send_json(HTTPStatus.OK, self.server.demo.test_digit(seed))
            finally:
                self.server.job_slots.release()

    def _same_origin(self) -> bool:
        """Refuse a request from another origin (403), addressed to another host (DNS rebinding, 403),
        with a doubled `Origin` or `Host` or none on HTTP/1.1 (400); an API route also refuses a
        request the browser marks as cross-site (`Sec-Fetch-Site`, sent even without `Origin`)."""
        hosts, origins = self.headers.get_all("Host") or [], self.headers.get_all("Origin") or []
        host, origin = (hosts or [None])[0], (origins or [None])[0]
        target = urlparse(self.path)
        site = self.headers.get("Sec-Fetch-Site")
        if len(hosts) > 1 or len(origins) > 1:
            status, reason = HTTPStatus.BAD_REQUEST, "a request may carry one Host and one Origin header"
        elif host is None and self.request_version == "HTTP/1.1":
            status, reason = HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs a Host header"
        elif target.scheme and (target.scheme != "http" or not self.server.serves_host(target.netloc)):
            status, reason = HTTPStatus.FORBIDDEN, "the request names another server"
        elif host is not None and not self.server.serves_host(host):
            status, reason = HTTPStatus.FORBIDDEN, f"Host {host[:MAX_ECHO]!r} is not an address of this server"
        elif origin is not None and (host is None or origin.lower() != f"http://{host}".lower()):
            status, reason = (HTTPStatus.FORBIDDEN,
                              f"requests from {origin[:MAX_ECHO]!r} are not allowed; open the page this server serves")
        elif target.path.startswith("/api/") and site not in (None, "same-origin", "none"):
            status, reason = HTTPStatus.FORBIDDEN, "requests from other sites are not allowed"
        else:
            return True
        self._send_json(status, {"error": reason})
        return False

    def _client_gone(self) -> bool:
        """True when the client has closed its end. Bytes it sent after its request (there is one
        request per connection) are read and dropped: peeking at them hid the close behind them."""
        try:
            self.connection.setblocking(False)
            try:
                # A client streaming garbage is still there: after 16 reads, ask again at the next poll.
                return any(self.connection.recv(65536) == b"" for _ in range(16))
            finally:
                self.connection.setblocking(True)
                self.connection.settimeout(self.timeout)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _write_paced(self, head: list[dict], rest: Iterator[dict], pace_s: float) -> None:
        last = 0.0
        for item in itertools.chain(head, rest):
            wait = last + pace_s - time.monotonic()
            if item.get("type") == "frame" and wait > 0:
                time.sleep(wait)
            self.wfile.write((json.dumps(item) + "\n").encode())
            self.wfile.flush()
            last = time.monotonic()

    def _read_json(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError("the request needs a Content-Length header") from None
        if not 0 < length <= MAX_BODY_BYTES:
            raise RequestError(f"the request body must be 1 to {MAX_BODY_BYTES} bytes, got {length}")
        data = self.rfile.read(length)
        if len(data) != length:
            raise RequestError(f"the request body ended after {len(data)} of its {length} bytes")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting thousands deep
            raise RequestError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
         b'{"error": "the server has too many open connections; try again in a moment"}')


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], demo: Demo, *, max_connections: int = MAX_CONNECTIONS,
                 max_jobs: int = MAX_JOBS, request_deadline_s: float = REQUEST_DEADLINE_S) -> None:
        # An IPv6 address (`serve --host ::1`) needs an IPv6 socket.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, DemoHandler)
        self.demo, self.request_deadline_s = demo, request_deadline_s
        self.connection_slots = threading.BoundedSemaphore(max_connections)
        self.job_slots = threading.BoundedSemaphore(max_jobs)
        self._reading: dict[socket.socket, float] = {}  # connections still sending their request: since when
        self._reading_lock = threading.Lock()
        bound = ipaddress.ip_address(self.server_address[0])
        names = {"localhost"}
        if not bound.is_loopback:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self._bound, self._names = bound, names

    def serves_host(self, header: str) -> bool:
        """Whether a `Host` header names this server: its port, and localhost, one of this machine's
        names (when bound beyond loopback) or an IP address it listens on. A domain name that merely
        resolves here (DNS rebinding) is refused."""
        name, _, port = header.strip().lower().rpartition(":")
        if not name or "]" in port:  # no port given: port 80
            name, port = header.strip().lower(), "80"
        if port != str(self.server_address[1]):
            return False
        if name in self._names:
            return True
        try:
            address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
        except ValueError:
            return False
        if self._bound.is_unspecified:
            return True
        return address == self._bound or (address.is_loopback and self._bound.is_loopback)

    def started_request(self, connection: socket.socket) -> None:
        with self._reading_lock:
            self._reading[connection] = time.monotonic()

    def finished_request(self, connection: socket.socket) -> None:
        with self._reading_lock:
            self._reading.pop(connection, None)

    def _drop_slowest_reader(self) -> bool:
        """Shut the connection that has waited longest without finishing its request (its thread then
        ends and frees its slot); False when every connection is busy with a real request."""
        with self._reading_lock:
            if not self._reading:
                return False
            slowest = min(self._reading, key=self._reading.__getitem__)
            del self._reading[slowest]
        with contextlib.suppress(OSError):
            slowest.shutdown(socket.SHUT_RDWR)
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connection_slots.acquire(blocking=False) and not (
                self._drop_slowest_reader() and self.connection_slots.acquire(timeout=2.0)):
            try:  # answered on the listening thread: no thread for a connection over the limit
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out is routine: nothing is printed. Anything else is one line."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        print(f"mnist-diffusion serve: error while answering {client_address[0]}: "
              f"{' '.join(str(error).split()) or type(error).__name__}", file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    """Whether `host` (as given to `serve --host`) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 8000, **limits: float) -> DemoServer:
    """A server bound to `host:port` (port 0: any free port); call `serve_forever()` on it."""
    torch.set_num_threads(1)
    return DemoServer((host, port), demo, **limits)


def run_server(demo: Demo, host: str, port: int, *, open_page: bool = False,
               say: Callable[[str], None] = print) -> None:
    """Serve `demo` on `host:port` until Ctrl-C or SIGTERM (the exception propagates once the socket is
    closed and every running job has stopped, so no worker is left inside torch when the process exits).
    `open_page` opens the page in a browser from another thread: a console browser that waits for the
    page (as lynx and w3m do) is answered, since the server is already listening."""
    try:
        server = make_server(demo, host, port)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port} ({error.strerror})") from None
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host if ':' not in str(bound_host) else f'[{bound_host}]'}:{bound_port}/"
    say(f"serving {url} (Ctrl-C stops)")
    if open_page:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        demo.stop_all()
