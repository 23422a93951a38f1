"""Slow clients against `mnist-diffusion serve` at its real deadline: how long a slowloris holds a
connection, and whether a real request is served while 32 of them hold every slot.

    python benchmarks/slowloris.py [--every 2] [--clients 32]

Starts the server as `mnist-diffusion serve` does (its library call, default settings, no MNIST
files), then: one client that sends its request one byte every `--every` seconds, timed until the
server drops it; then `--clients` such clients at once and, while they all hold their connections,
one ordinary request, timed until its answer. Writes benchmarks/results/slowloris.md and .json.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from report import markdown_table, write_report

RESULTS = Path(__file__).parent / "results"


def trickle(port: int, every_s: float) -> float:
    """Send a request one byte every `every_s` seconds, watching for the close between bytes (every
    50 ms); the seconds from connecting until the server drops the connection."""
    request = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as connection:
        start = time.monotonic()
        connection.settimeout(0.05)
        for byte in request:
            try:
                connection.send(bytes([byte]))
            except OSError:
                break
            next_byte = time.monotonic() + every_s
            while time.monotonic() < next_byte:
                try:
                    if connection.recv(1) == b"":  # the server closed it
                        return time.monotonic() - start
                except TimeoutError:
                    continue
                except OSError:
                    return time.monotonic() - start
    return time.monotonic() - start


def ordinary(port: int) -> tuple[bytes, float]:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(f"GET /api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0], time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between a slow client's bytes")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    load = os.getloadavg()[0]  # what else the machine was doing: client threads starved of CPU see a close late
    with tempfile.TemporaryDirectory() as empty:
        serve = ("import sys; from mnist_diffusion.serve import Demo, run_server; "
                 "run_server(Demo.load(None, sys.argv[2]), '127.0.0.1', int(sys.argv[1]), say=lambda line: "
                 "print(line, flush=True))")  # what `mnist-diffusion serve --port P --data-root EMPTY` runs
        server = subprocess.Popen([sys.executable, "-c", serve, str(args.port), empty], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            for line in server.stdout:  # the server says its address once it listens
                if "http://" in line:
                    break
            alone = trickle(args.port, args.every)
            held: list[float] = []
            clients = [threading.Thread(target=lambda: held.append(trickle(args.port, args.every)))
                       for _ in range(args.clients)]
            for client in clients:
                client.start()
            time.sleep(3 * args.every)  # every slow client has connected and sent a few bytes
            status, seconds = ordinary(args.port)
            for client in clients:
                client.join()
        finally:
            server.terminate()
            server.wait()
    payload = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
               "command": f"python benchmarks/slowloris.py --every {args.every:g} --clients {args.clients}",
               "one_slow_client_dropped_after_s": alone, "ordinary_request_status": status.decode(),
               "ordinary_request_s": seconds, "slow_clients_dropped_after_s": [min(held), max(held)],
               "load_average_at_start": load}
    lines = [f"# Slow clients against `serve` ({payload['date']})", "",
             f"`{payload['command']}`: the server as a user starts it (its defaults, no MNIST files); each slow "
             f"client sends a request one byte every {args.every:g} s and watches for the close every 50 ms. "
             f"Load average at the start: {load:.1f} on {os.cpu_count()} cores.", "",
             *markdown_table(["case", "result"], [
                 ["one slow client", f"dropped after {alone:.1f} s"],
                 [f"an ordinary request while {args.clients} slow clients hold their connections",
                  f"`{status.decode()}` in {seconds:.2f} s"],
                 [f"the {args.clients} slow clients", f"dropped after {min(held):.1f}-{max(held):.1f} s"]])]
    write_report(RESULTS / "slowloris", payload, lines)


if __name__ == "__main__":
    main()
