"""The `serve` API without a browser: streams, refusals with HTTP 400, concurrency, Ctrl-C."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnist_diffusion.data import to_uint8
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.serve import MAX_BODY_BYTES, Demo, DemoHandler, Job, make_server

from conftest import run_cli


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo = Demo.load(None, tmp_path_factory.mktemp("no-data"))
    threads_before = torch.get_num_threads()
    server = make_server(demo, "127.0.0.1", 0)  # sets torch to one thread, as `serve` runs
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads_before)


def post(url: str, body: object, raw: bytes | None = None) -> tuple[int, list[dict]]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, [json.loads(line) for line in response.read().splitlines() if line.strip()]
    except urllib.error.HTTPError as error:
        with error:
            return error.code, [json.loads(error.read())]


def test_generate_streams_every_step_and_ends_on_the_librarys_digit(server_url: str) -> None:
    status, items = post(f"{server_url}/api/generate", {"digit": 4, "seed": 9, "steps": 6, "pace_ms": 0})
    assert status == 200
    frames, done = items[:-1], items[-1]
    assert [f["step"] for f in frames] == [1, 2, 3, 4, 5, 6] and done["type"] == "done"
    assert done["passes_per_digit"] == 7  # 6 steps, one of them (t/T = 0.49) in the default guidance interval
    pipe = Pipeline.load(device="cpu")  # the page draws what the Python API and the command line draw
    expected = to_uint8(pipe.generate(1, torch.tensor([4]), pipe.settings(steps=6), torch.Generator().manual_seed(9)))
    assert done["pixels"] == expected[0].flatten().tolist()


def test_complete_keeps_the_known_pixels(server_url: str) -> None:
    pixels = [0] * 784
    for row in range(4, 14):
        pixels[row * 28 + 14] = 255  # a vertical stroke in the upper half
    known = [1] * 392 + [0] * 392  # the lower half is to be drawn
    status, items = post(f"{server_url}/api/complete", {"pixels": pixels, "known": known, "method": "replace",
                                                        "steps": 5, "pace_ms": 0})
    assert status == 200 and items[-1]["type"] == "done" and len(items) == 6
    assert items[-1]["pixels"][:392] == pixels[:392]


def test_interpolation_streams_its_frames(server_url: str) -> None:
    status, items = post(f"{server_url}/api/interpolate", {"mode": "digits", "digits": [3, 8], "frames": 4,
                                                           "steps": 3})
    assert status == 200 and [item.get("frame") for item in items[:-1]] == [1, 2, 3, 4]


@pytest.mark.parametrize(("path", "body", "message"), [
    ("generate", {"digit": 12}, "digit must be a whole number from 0 to 9, got 12"),
    ("generate", {"seed": "abc"}, 'seed must be a whole number from 0 to 9007199254740991, got "abc"'),
    ("generate", {"steps": 5000}, "steps must be a whole number from 1 to 100, got 5000"),
    ("generate", {"guidance": 1e308}, "guidance must be a number from 0 to 20"),
    ("generate", {"sampler": "magic"}, "sampler must be one of consistency, ddim, ddpm, dpm++2m, dpm++2m-sde"),
    ("generate", [1, 2], "the request body must be a JSON object"),
    ("complete", {"pixels": [0] * 100, "known": [1] * 784}, "pixels must be a list of 784 whole numbers"),
    ("complete", {"pixels": [0] * 784, "known": [1] * 784}, "the mask must keep some pixels and erase others"),
    ("complete", {"pixels": [0] * 784, "known": [0] * 784}, "the mask must keep some pixels and erase others"),
    ("interpolate", {"mode": "digits", "digits": [3]}, "digits must be a list of two digits"),
    ("interpolate", {"frames": 99}, "frames must be a whole number from 2 to 16"),
])
def test_bad_requests_get_400_and_one_line(server_url: str, path: str, body: object, message: str) -> None:
    status, items = post(f"{server_url}/api/{path}", body)
    assert status == 400 and message in items[0]["error"] and "\n" not in items[0]["error"]


def test_bodies_that_are_not_json_or_too_large_get_400(server_url: str) -> None:
    assert post(f"{server_url}/api/generate", None, raw=b"{not json")[0] == 400
    status, items = post(f"{server_url}/api/generate", None, raw=b" " * (MAX_BODY_BYTES + 1))
    assert status == 400 and "request body must be 1 to" in items[0]["error"]
    # ... and the server keeps serving.
    assert post(f"{server_url}/api/generate", {"steps": 2, "pace_ms": 0})[0] == 200


def test_two_requests_at_once_both_finish(server_url: str) -> None:
    results: list[int] = []

    def one(seed: int) -> None:
        status, items = post(f"{server_url}/api/generate", {"digit": 1, "seed": seed, "steps": 8, "pace_ms": 0})
        results.append(status if items[-1]["type"] == "done" else -1)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [200, 200]


def test_the_page_and_its_files_are_served(server_url: str) -> None:
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        with urllib.request.urlopen(server_url + path, timeout=30) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
            assert len(response.read()) > 500
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server_url + "/secrets", timeout=30)
    missing.value.close()
    assert missing.value.code == 404


def test_ctrl_c_stops_the_server_cleanly(tmp_path: Path) -> None:
    # A shell that starts jobs in the background without job control ignores SIGINT in them, and the
    # child would inherit that; a terminal's Ctrl-C reaches a server whose SIGINT is the default.
    with subprocess.Popen([sys.executable, "-m", "mnist_diffusion", "serve", "--port", "0", "--data-root",
                           str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        url = line.split()[1]
        with urllib.request.urlopen(url + "api/info", timeout=30) as response:
            assert json.loads(response.read())["num_classes"] == 10
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 130 and "Traceback" not in err and "stopped" in err


# -- what a hostile page or client cannot do ----------------------------------------------------

class GatedNetwork(torch.nn.Module):
    """A network whose `hold`-th forward pass waits for `release`; it counts the passes made."""

    def __init__(self, inner: torch.nn.Module, hold: int) -> None:
        super().__init__()
        self.inner, self.config, self.hold = inner, inner.config, hold
        self.passes, self.entered, self.release = 0, threading.Event(), threading.Event()

    def forward(self, *args, **kwargs):
        self.passes += 1
        if self.passes == self.hold:
            self.entered.set()
            assert self.release.wait(timeout=120)
        return self.inner(*args, **kwargs)


@pytest.fixture
def gated_server(tmp_path: Path) -> Iterator[tuple]:
    """A server of its own (one job at a time, three connections) whose network holds at pass 2."""
    demo = Demo.load(None, tmp_path / "no-data")
    demo.model = GatedNetwork(demo.model, hold=2)
    threads_before = torch.get_num_threads()
    server = make_server(demo, "127.0.0.1", 0, max_connections=3, max_jobs=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, demo.model
    demo.model.release.set()
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads_before)


def raw_request(port: int, request: bytes) -> bytes:
    """Send `request` as is on a new connection; return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def post_request(port: int, body: bytes, **headers: str) -> bytes:
    lines = ["POST /api/generate HTTP/1.0", f"Content-Length: {len(body)}",
             *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_cross_origin_post_is_refused_before_any_work(server_url: str) -> None:
    """A page on another site can POST text/plain without a preflight: the Origin header gives it away."""
    port = int(server_url.rsplit(":", 1)[1])
    body = json.dumps({"steps": 2, "pace_ms": 0}).encode()
    for origin in ("http://evil.example", "null", f"http://localhost:{port + 1}"):
        answer = raw_request(port, post_request(port, body, Host=f"127.0.0.1:{port}", Origin=origin))
        assert answer.startswith(b"HTTP/1.0 403") and b"not allowed" in answer, answer[:200]
    same_origin = raw_request(port, post_request(port, body, Host=f"127.0.0.1:{port}",
                                                 Origin=f"http://127.0.0.1:{port}"))
    assert same_origin.startswith(b"HTTP/1.0 200") and b'"type": "done"' in same_origin


def test_a_foreign_host_header_is_refused_so_dns_rebinding_cannot_read_answers(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1:{port + 1}", f"10.0.0.1:{port}"):
        answer = raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 403") and b"not an address of this server" in answer, (host, answer)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()).startswith(
            b"HTTP/1.0 200")


def test_a_body_that_never_arrives_times_out(gated_server: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = gated_server
    monkeypatch.setattr(DemoHandler, "timeout", 0.2)
    port = server.server_address[1]
    answer = raw_request(port, b"POST /api/generate HTTP/1.0\r\nContent-Length: 1000\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive" in answer
    assert raw_request(port, b"GET /api/info HTTP/1.0\r\nHost: loc") == b""  # half a request: dropped


def test_connections_and_jobs_are_bounded(gated_server: tuple) -> None:
    server, network = gated_server
    port = server.server_address[1]
    first = socket.create_connection(("127.0.0.1", port), timeout=120)
    first.sendall(post_request(port, json.dumps({"steps": 4, "pace_ms": 0}).encode()))
    assert network.entered.wait(timeout=120)  # the one job slot is taken, its worker held
    busy = raw_request(port, post_request(port, json.dumps({"steps": 2}).encode()))
    assert busy.startswith(b"HTTP/1.0 503") and b"busy" in busy
    idle = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(2)]  # all 3 held now
    # A newcomer takes the slot of the connection that has waited longest without sending its request.
    info = raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert info.startswith(b"HTTP/1.0 200") and idle[0].recv(4096) == b""  # the idle one was dropped
    info = raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert info.startswith(b"HTTP/1.0 200") and idle[1].recv(4096) == b""
    for connection in idle:
        connection.close()
    network.release.set()
    with first:
        answer = b""
        while chunk := first.recv(65536):
            answer += chunk
    assert b'"type": "done"' in answer


def test_a_newcomer_gets_503_when_every_connection_is_being_answered(tmp_path: Path) -> None:
    """Only a connection still sending its request can be dropped for a newcomer; one whose request
    was read (here the only slot, a running job) keeps it, and the newcomer is answered 503 at once."""
    demo = Demo.load(None, tmp_path / "no-data")
    demo.model = GatedNetwork(demo.model, hold=2)
    server = make_server(demo, "127.0.0.1", 0, max_connections=1, max_jobs=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as first:
            first.sendall(post_request(port, json.dumps({"steps": 4, "pace_ms": 0}).encode()))
            assert demo.model.entered.wait(timeout=120)
            over = raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert over.startswith(b"HTTP/1.0 503") and b"too many open connections" in over
            demo.model.release.set()
    finally:
        demo.model.release.set()
        server.shutdown()
        server.server_close()


def test_work_stops_when_its_client_goes_away(gated_server: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job notices the closed connection while its network pass is held, and makes no further pass."""
    from mnist_diffusion import serve

    server, network = gated_server
    jobs: list[serve.Job] = []
    original = serve.Job

    def recorded_job(**kwargs) -> serve.Job:
        jobs.append(original(**kwargs))
        return jobs[-1]

    monkeypatch.setattr(serve, "Job", recorded_job)
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(post_request(port, json.dumps({"steps": 50, "pace_ms": 0}).encode()))
        assert network.entered.wait(timeout=120)
    assert jobs[0].cancelled.wait(timeout=120)
    network.release.set()
    assert server.job_slots.acquire(timeout=120)  # the worker has ended and freed its slot
    assert network.passes == 2  # the held pass finished; none after it


def test_work_stops_when_its_client_leaves_after_an_extra_byte(gated_server: tuple,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One byte after the request hid the close from a peek: the job ran on for nobody."""
    from mnist_diffusion import serve

    server, network = gated_server
    jobs: list[serve.Job] = []
    original = serve.Job
    monkeypatch.setattr(serve, "Job", lambda **kwargs: jobs.append(original(**kwargs)) or jobs[-1])
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(post_request(port, json.dumps({"steps": 50, "pace_ms": 0}).encode()))
        assert network.entered.wait(timeout=120)  # the request was read; the job runs
        connection.sendall(b"x")  # one more byte, which waits in the socket, then the client leaves
    assert jobs[0].cancelled.wait(timeout=120)
    network.release.set()
    assert server.job_slots.acquire(timeout=120)
    assert network.passes == 2  # stopped within one pass of the client leaving


def test_deeply_nested_json_is_a_400(server_url: str) -> None:
    for body in (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 30_000):
        status, items = post(f"{server_url}/api/generate", None, raw=body)
        assert status == 400 and "not JSON" in items[0]["error"]


def test_client_disconnects_are_not_logged_and_other_errors_are_one_line(
        gated_server: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = gated_server
    for error in (BrokenPipeError(), ConnectionResetError(), TimeoutError()):
        try:
            raise error
        except OSError:
            server.handle_error(None, ("127.0.0.1", 5555))
    assert capsys.readouterr().err == ""
    try:
        raise KeyError("boom")
    except KeyError:
        server.handle_error(None, ("127.0.0.1", 5555))
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "boom" in err and "Traceback" not in err


def test_serving_beyond_this_machine_warns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_diffusion import serve

    class StopAtOnce:
        server_address = ("0.0.0.0", 8123)

        def serve_forever(self) -> None:
            raise KeyboardInterrupt

        def server_close(self) -> None:
            pass

    monkeypatch.setattr(serve, "make_server", lambda *args, **kwargs: StopAtOnce())
    code, _, err = run_cli(capsys, "serve", "--host", "0.0.0.0", "--data-root", "nowhere")
    assert code == 130 and "warning: --host 0.0.0.0 makes the page reachable from other machines" in err
    code, _, err = run_cli(capsys, "serve", "--host", "127.0.0.1", "--data-root", "nowhere")
    assert "warning" not in err


def test_a_guidance_free_checkpoint_serves_guided_requests(tmp_path: Path) -> None:
    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import DiffusionConfig, preset
    from mnist_diffusion.unet import UNet

    config = preset("tiny", guidance_input=True)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=50), UNet(config).state_dict()),
                           tmp_path / "gf.safetensors")
    demo = Demo.load(str(path), tmp_path / "no-data")
    items = list(demo.generate({"digit": 3, "guidance": 2.0, "steps": 3}, Job()))
    assert items[-1]["type"] == "done", items[-1]


def _trickle_then_read(port: int, request: bytes, every_s: float) -> tuple[bytes, int]:
    """Send `request` one byte every `every_s` until the server answers or closes; return what it said
    and how many bytes went out."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        sent = 0
        for byte in request:
            if select.select([connection], [], [], every_s)[0]:  # the server spoke or closed: stop sending
                break
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                break
            sent += 1
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer, sent


def test_a_slowloris_is_dropped_at_the_request_deadline(tmp_path: Path) -> None:
    """One header byte at a time passed every per-read timeout and held the connection forever; the
    deadline covers the whole request (here 1 s, against a trickle that would take 20 s)."""
    demo = Demo.load(None, tmp_path / "no-data")
    server = make_server(demo, "127.0.0.1", 0, request_deadline_s=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        request = f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nX-Slow: {'a' * 100}\r\n\r\n".encode()
        answer, sent = _trickle_then_read(port, request, every_s=0.15)
        assert sent < len(request) and b"HTTP/1.0 200" not in answer  # cut off before it finished
    finally:
        server.shutdown()
        server.server_close()


def test_slow_clients_filling_every_slot_do_not_stop_a_real_request(tmp_path: Path) -> None:
    demo = Demo.load(None, tmp_path / "no-data")
    server = make_server(demo, "127.0.0.1", 0, max_connections=32)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(32)]
    try:
        for connection in slow:
            connection.sendall(b"GET /api/info HTTP/1.0\r\nHo")  # and then nothing
        answer = raw_request(port, f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 200"), answer[:100]
    finally:
        for connection in slow:
            connection.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("request_line", "status"), [
    (b"PUT /api/info HTTP/1.0", b"405"), (b"DELETE / HTTP/1.0", b"405"), (b"PATCH / HTTP/1.0", b"405"),
    (b"OPTIONS / HTTP/1.0", b"405"), (b"get / HTTP/1.0", b"405"), (b"GARBAGE", b"400"),
])
def test_unknown_methods_and_garbage_get_a_json_line_with_headers(server_url: str, request_line: bytes,
                                                                  status: bytes) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    answer = raw_request(port, request_line + f"\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 " + status) and b"application/json" in head, answer[:200]
    assert json.loads(body)["error"]


def test_echoed_values_are_capped(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    answer = raw_request(port, b"GET / HTTP/1.0\r\nHost: " + b"x" * 60_000 + b"\r\n\r\n")
    assert len(answer) < 2_000 and b"403" in answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(("headers", "status"), [
    ("Host: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}", b"400"),
    ("Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nOrigin: null", b"400"),
    ("Sec-Fetch-Site: cross-site\r\nHost: 127.0.0.1:{port}", b"403"),
])
def test_doubled_or_cross_site_headers_are_refused(server_url: str, headers: str, status: bytes) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    request = f"GET /api/test-digit?seed=1 HTTP/1.0\r\n{headers.format(port=port)}\r\n\r\n".encode()
    assert raw_request(port, request).split(b"\r\n", 1)[0].startswith(b"HTTP/1.0 " + status)


def test_http11_without_host_and_absolute_targets_elsewhere_are_refused(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    assert b" 400 " in raw_request(port, b"GET /api/info HTTP/1.1\r\nConnection: close\r\n\r\n").split(b"\r\n")[0]
    answer = raw_request(port, f"GET http://evil.example/api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert b" 403 " in answer.split(b"\r\n")[0]
    answer = raw_request(port, f"GET http://127.0.0.1:{port}/api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                         .encode())
    assert b" 200 " in answer.split(b"\r\n")[0]


def test_a_drawn_test_digit_takes_a_job_slot(gated_server: tuple) -> None:
    """Without MNIST the test digit is drawn by the network: it counts against the job bound."""
    server, network = gated_server
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as first:
        first.sendall(post_request(port, json.dumps({"steps": 4, "pace_ms": 0}).encode()))
        assert network.entered.wait(timeout=120)
        answer = raw_request(port, f"GET /api/test-digit?seed=3 HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 503") and b"busy" in answer
        network.release.set()


def test_serve_listens_on_ipv6_loopback(tmp_path: Path) -> None:
    """`serve --host ::1` failed: "Address family for hostname not supported"."""
    server = make_server(Demo.load(None, tmp_path / "no-data"), "::1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("::1", port), timeout=60) as connection:
            connection.sendall(f"GET /api/info HTTP/1.0\r\nHost: [::1]:{port}\r\n\r\n".encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()
        server.server_close()


def test_a_console_browser_opened_by_serve_gets_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --open` started the browser before serving: a browser that fetches the page and waits (lynx,
    w3m) deadlocked. The fake browser here fetches the page, then stops the server."""
    import urllib.request
    import webbrowser

    from mnist_diffusion import serve

    made: list = []
    fetched: list[int] = []

    def make(*args, **kwargs):
        made.append(make_server(*args, **kwargs))
        return made[-1]

    def console_browser(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=60) as response:  # blocks until the page is served
            fetched.append(response.status)
        made[0].shutdown()
        return True

    monkeypatch.setattr(serve, "make_server", make)
    monkeypatch.setattr(webbrowser, "open", console_browser)
    serve.run_server(Demo.load(None, tmp_path / "no-data"), "127.0.0.1", 0, open_page=True, say=lambda line: None)
    assert fetched == [200]


SERVE_AND_REPORT = """
import sys
from mnist_diffusion.cli import main
sys.exit(main(["serve", "--port", "0", "--data-root", sys.argv[1]]))
"""


def test_sigterm_while_a_job_runs_stops_the_job_and_exits_143(tmp_path: Path) -> None:
    """SIGTERM mid-job aborted the process ("terminate called without an active exception", exit -6)."""
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", SERVE_AND_REPORT, str(tmp_path / "no-data")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        port = int(line.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=120) as client:
            client.sendall(post_request(port, json.dumps({"steps": 100, "sampler": "ddim", "pace_ms": 0}).encode(),
                                        Host=f"127.0.0.1:{port}"))
            received = b""
            while b'"type": "frame"' not in received:  # the job is running
                chunk = client.recv(65536)
                assert chunk, received
                received += chunk
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "terminate called" not in err and "Traceback" not in err
