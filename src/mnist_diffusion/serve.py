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
- hold it open: every read and write on a connection times out (`READ_TIMEOUT_S`), at most
  `MAX_CONNECTIONS` connections are served at once (the rest get 503 at once, without a thread),
  and at most `MAX_JOBS` sampling jobs run at once (the rest get 503);
- make it compute for nobody: a job stops within one network pass of its client going away.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .completion import COMPLETION_METHODS, DEFAULT_METHOD, REPAINT_STEPS, complete, model_inputs
from .data import DataError, load_mnist, to_uint8
from .interpolation import DETERMINISTIC_SAMPLERS, interpolate_digits, interpolate_seeds
from .sampling import (
    DEFAULT_GUIDANCE,
    DEFAULT_GUIDANCE_INTERVAL,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_GUIDANCE,
    SAMPLERS,
    count_passes,
    generate,
)
from .schedule import NoiseSchedule

MAX_BODY_BYTES = 64 * 1024
MAX_STEPS = 100  # per request; full-T DDPM (1000 steps) belongs on the command line
MAX_FRAMES = 16
MAX_PACE_MS = 2000
DEFAULT_PACE_MS = 60  # at least this long between streamed frames, so a person can follow
MAX_SEED = 2**53 - 1  # the largest integer JavaScript's numbers hold exactly
READ_TIMEOUT_S = 10.0  # a client silent this long mid-request (or not reading its answer) is dropped
MAX_CONNECTIONS = 32  # connections served at once; more are answered 503 without a thread
MAX_JOBS = 4  # sampling jobs at once (they share one network); more are answered 503
POLL_S = 0.25  # how often a waiting connection checks that its client is still there
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}


class RequestError(ValueError):
    """A request the server refuses with HTTP 400; the message is shown on the page."""


class Cancelled(Exception):
    """The client of a job has gone; the job stops at its next network pass."""


@dataclass
class Job:
    """One request's link to its connection: `cancelled` stops the work at the next network pass,
    `client_gone()` tells a waiting connection that nobody will read the answer, and `on_finish` runs
    when the worker ends (it frees the server's job slot)."""

    client_gone: Callable[[], bool] = lambda: False
    on_finish: Callable[[], None] = lambda: None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _SerializedModel(nn.Module):
    """The shared network for one job: one forward pass at a time across all jobs (requests in other
    threads wait per step), and none once the job is cancelled."""

    def __init__(self, model: nn.Module, lock: threading.Lock, cancelled: threading.Event) -> None:
        super().__init__()
        self.inner, self.lock, self.cancelled, self.config = model, lock, cancelled, model.config

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # the network's own signature
        if self.cancelled.is_set():
            raise Cancelled
        with self.lock:
            return self.inner(*args, **kwargs)


# -- request fields: each names the field and what is allowed -----------------------------------

def _integer(body: dict, name: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {json.dumps(value)}")
    return value


def _number(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name, default)
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {json.dumps(value)}")
    return float(value)


def _choice(body: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise RequestError(f"{name} must be one of {', '.join(choices)}, got {json.dumps(value)}")
    return value


def _pixel_list(body: dict, name: str, high: int) -> torch.Tensor:
    value = body.get(name)
    if (not isinstance(value, list) or len(value) != 784
            or not all(type(v) is int and 0 <= v <= high for v in value)):
        raise RequestError(f"{name} must be a list of 784 whole numbers from 0 to {high} (a 28x28 image, row by row)")
    return torch.tensor(value, dtype=torch.uint8).reshape(28, 28)


@dataclass
class Demo:
    """The model and what the page needs to know about it."""

    model: nn.Module
    schedule: NoiseSchedule
    num_classes: int
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time

    @classmethod
    def load(cls, checkpoint_path: str | None, data_root: str | Path) -> Demo:
        checkpoint = load_checkpoint(checkpoint_path)
        model = checkpoint.build_model()
        try:
            test_images, test_labels = load_mnist(data_root, "test", download=False)
        except (DataError, OSError):
            test_images, test_labels = None, None
        return cls(model, NoiseSchedule(checkpoint.diffusion_config), checkpoint.model_config.num_classes,
                   test_images, test_labels)

    def info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "samplers": sorted(SAMPLERS),
                "interpolation_samplers": list(DETERMINISTIC_SAMPLERS), "completion_methods": list(COMPLETION_METHODS),
                "defaults": {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE,
                             "method": DEFAULT_METHOD, "pace_ms": DEFAULT_PACE_MS},
                "limits": {"steps": min(MAX_STEPS, self.schedule.num_timesteps), "guidance": MAX_GUIDANCE,
                           "frames": MAX_FRAMES, "seed": MAX_SEED},
                "test_digits": self.test_images is not None}

    def _digit(self, body: dict, required: bool) -> int | None:
        if body.get("digit") is None and not required:
            return None
        if self.num_classes == 0:
            raise RequestError("this model is unconditional: it cannot be asked for a digit")
        return _integer(body, "digit", 0, self.num_classes - 1)

    def _steps(self, body: dict, default: int) -> int:
        return _integer(body, "steps", 1, min(MAX_STEPS, self.schedule.num_timesteps), default)

    # -- the three streams ------------------------------------------------------------------------
    def generate(self, body: dict, job: Job) -> Iterator[dict]:
        digit = self._digit(body, required=False)
        guidance = _number(body, "guidance", 0.0, MAX_GUIDANCE, DEFAULT_GUIDANCE)
        sampler = _choice(body, "sampler", tuple(sorted(SAMPLERS)), DEFAULT_SAMPLER)
        steps, seed = self._steps(body, DEFAULT_STEPS), _integer(body, "seed", 0, MAX_SEED, 0)
        labels = torch.tensor([digit]) if digit is not None else None
        passes = count_passes(self.schedule, sampler, steps, labels is not None, guidance, DEFAULT_GUIDANCE_INTERVAL,
                              self.model.config.guidance_input)

        def run(model: nn.Module, callback: Callable[[dict], None]) -> torch.Tensor:
            return generate(model, self.schedule, 1, labels=labels, guidance=guidance, sampler=sampler,
                            steps=steps, generator=torch.Generator().manual_seed(seed), callback=callback,
                            guidance_interval=DEFAULT_GUIDANCE_INTERVAL)

        yield from self._stream(job, run, _step_frames(steps), _result_frame({"passes_per_digit": passes}))

    def complete(self, body: dict, job: Job) -> Iterator[dict]:
        pixels, known = _pixel_list(body, "pixels", 255), _pixel_list(body, "known", 1).bool()
        if bool(known.all()) or not bool(known.any()):
            raise RequestError("the mask must keep some pixels and erase others: mark the part to draw")
        digit = self._digit(body, required=False)
        method = _choice(body, "method", COMPLETION_METHODS, DEFAULT_METHOD)
        steps = self._steps(body, REPAINT_STEPS if method == "repaint" else DEFAULT_STEPS)
        seed = _integer(body, "seed", 0, MAX_SEED, 0)
        image, mask = model_inputs(pixels[None], known[None], self.model.config.image_size)

        def run(model: nn.Module, callback: Callable[[dict], None]) -> torch.Tensor:
            return complete(model, self.schedule, image, mask, labels=torch.tensor([digit]) if digit is not None
                            else None, guidance=DEFAULT_GUIDANCE if digit is not None else 1.0, method=method,
                            steps=steps, generator=torch.Generator().manual_seed(seed), callback=callback)

        yield from self._stream(job, run, _step_frames(steps), _result_frame({"method": method}))

    def interpolate(self, body: dict, job: Job) -> Iterator[dict]:
        mode = _choice(body, "mode", ("seeds", "digits"), "seeds")
        frames = _integer(body, "frames", 2, MAX_FRAMES, 8)
        common = {"guidance": _number(body, "guidance", 0.0, MAX_GUIDANCE, DEFAULT_GUIDANCE),
                  "steps": self._steps(body, DEFAULT_STEPS)}
        if mode == "seeds":
            pair = body.get("seeds")
            if not (isinstance(pair, list) and len(pair) == 2):
                raise RequestError("seeds must be a list of two seeds")
            seeds = (_integer({"seed": pair[0]}, "seed", 0, MAX_SEED), _integer({"seed": pair[1]}, "seed", 0, MAX_SEED))
            digit = self._digit(body, required=False)

            def run(model: nn.Module, callback: Callable[[dict], None]) -> torch.Tensor:
                return interpolate_seeds(model, self.schedule, seeds, frames, digit=digit, **common)
        else:
            pair = body.get("digits")
            if not (isinstance(pair, list) and len(pair) == 2):
                raise RequestError("digits must be a list of two digits")
            digits = (self._digit({"digit": pair[0]}, True), self._digit({"digit": pair[1]}, True))
            seed = _integer(body, "seed", 0, MAX_SEED, 0)

            def run(model: nn.Module, callback: Callable[[dict], None]) -> torch.Tensor:
                return interpolate_digits(model, self.schedule, digits, frames, seed=seed, **common)

        def frames_of(result: torch.Tensor, seconds: float) -> list[dict]:
            pictures = to_uint8(result)
            return [*({"type": "frame", "frame": index + 1, "frames": frames, "pixels": frame.flatten().tolist()}
                      for index, frame in enumerate(pictures)), {"type": "done", "frames": frames}]

        yield from self._stream(job, run, None, frames_of)

    def _stream(self, job: Job, run: Callable[[nn.Module, Callable[[dict], None]], torch.Tensor],
                step_frame: Callable[[dict, float], dict] | None,
                result_frames: Callable[[torch.Tensor, float], list[dict]]) -> Iterator[dict]:
        """Run `run(model, callback)` in a worker thread on this job's view of the shared network;
        yield `step_frame` of every step as it arrives, then the `result_frames`. Frames cross threads
        through a queue, so the HTTP thread can pace them and notice a client that has gone. Closing
        the iterator (or the client going) cancels the work within one network pass."""
        items: queue.Queue = queue.Queue()
        started = time.perf_counter()
        model = _SerializedModel(self.model, self.lock, job.cancelled)

        def callback(step: dict) -> None:
            if step_frame is not None:
                items.put(step_frame(step, time.perf_counter() - started))

        def work() -> None:
            try:
                result = run(model, callback)
                for item in result_frames(result, time.perf_counter() - started):
                    items.put(item)
            except Cancelled:
                pass
            except Exception as error:  # reported in the stream; the server goes on
                items.put({"type": "error", "error": " ".join(str(error).split())})
            finally:
                job.on_finish()

        threading.Thread(target=work, daemon=True).start()
        try:
            while True:
                try:
                    item = items.get(timeout=POLL_S)
                except queue.Empty:
                    if job.client_gone():
                        return
                    continue
                yield item
                if item["type"] != "frame":
                    return
        finally:
            job.cancelled.set()  # a no-op when the work is done; otherwise it stops at its next pass

    def test_digit(self, seed: int) -> dict[str, Any]:
        if self.test_images is None or self.test_labels is None:
            labels = torch.tensor([seed % self.num_classes]) if self.num_classes else None
            model = _SerializedModel(self.model, self.lock, threading.Event())
            image = to_uint8(generate(model, self.schedule, 1, labels=labels, guidance=DEFAULT_GUIDANCE,
                                      generator=torch.Generator().manual_seed(seed)))[0]
            return {"pixels": image.flatten().tolist(), "label": None if labels is None else int(labels[0]),
                    "source": "drawn by the model (no MNIST test data found)"}
        index = int(torch.randint(len(self.test_images), (1,), generator=torch.Generator().manual_seed(seed)))
        return {"pixels": self.test_images[index].flatten().tolist(), "label": int(self.test_labels[index]),
                "source": f"MNIST test digit {index}"}


def _step_frames(steps: int) -> Callable[[dict, float], dict]:
    """A sampler step as a frame: its number and its predicted clean digit."""
    def frame(step: dict, seconds: float) -> dict:
        return {"type": "frame", "step": step["i"] + 1, "steps": steps, "t": int(step["t"]),
                "pixels": to_uint8(step["x0"][:1].cpu())[0].flatten().tolist(), "ms": round(1000 * seconds)}

    return frame


def _result_frame(extra: dict[str, Any]) -> Callable[[torch.Tensor, float], list[dict]]:
    def frames(result: torch.Tensor, seconds: float) -> list[dict]:
        return [{"type": "done", "pixels": to_uint8(result[:1])[0].flatten().tolist(), "seconds": round(seconds, 3),
                 **extra}]

    return frames


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes
    timeout = READ_TIMEOUT_S  # on every read and write of the connection (StreamRequestHandler applies it)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is the user's
        pass

    def do_GET(self) -> None:
        if not self._same_origin():
            return
        url = urlparse(self.path)
        if url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            self._send(HTTPStatus.OK, (resources.files("mnist_diffusion") / "web" / name).read_bytes(), content_type)
        elif url.path == "/api/info":
            self._send_json(HTTPStatus.OK, self.server.demo.info())
        elif url.path == "/api/test-digit":
            try:
                seed = _integer({"seed": _int_or_text(parse_qs(url.query).get("seed", ["0"])[0])}, "seed", 0,
                                MAX_SEED)
                self._send_json(HTTPStatus.OK, self.server.demo.test_digit(seed))
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
            pace_s = _integer(body, "pace_ms", 0, MAX_PACE_MS, DEFAULT_PACE_MS) / 1000
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

    def _same_origin(self) -> bool:
        """Refuse (403) a request from another origin or addressed to another host (DNS rebinding)."""
        host, origin = self.headers.get("Host"), self.headers.get("Origin")
        if host is not None and not self.server.serves_host(host):
            reason = f"Host {host!r} is not an address of this server"
        elif origin is not None and (host is None or origin.lower() != f"http://{host}".lower()):
            reason = f"requests from {origin!r} are not allowed; open the page this server serves"
        else:
            return True
        self._send_json(HTTPStatus.FORBIDDEN, {"error": reason})
        return False

    def _client_gone(self) -> bool:
        """True when the client has closed its end (a read would return nothing)."""
        try:
            self.connection.setblocking(False)
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
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
                 max_jobs: int = MAX_JOBS) -> None:
        super().__init__(address, DemoHandler)
        self.demo = demo
        self.connection_slots = threading.BoundedSemaphore(max_connections)
        self.job_slots = threading.BoundedSemaphore(max_jobs)
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

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connection_slots.acquire(blocking=False):
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


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 8000, **limits: int) -> DemoServer:
    """A server bound to `host:port` (port 0: any free port); call `serve_forever()` on it."""
    torch.set_num_threads(1)
    return DemoServer((host, port), demo, **limits)


def run_server(demo: Demo, host: str, port: int, *, open_page: bool = False,
               say: Callable[[str], None] = print) -> None:
    """Serve `demo` on `host:port` until Ctrl-C (KeyboardInterrupt propagates after the socket closes)."""
    try:
        server = make_server(demo, host, port)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port} ({error.strerror})") from None
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host if ':' not in str(bound_host) else f'[{bound_host}]'}:{bound_port}/"
    say(f"serving {url} (Ctrl-C stops)")
    if open_page:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
