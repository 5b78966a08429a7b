"""What the time limits on receiving a request (digitpipe.serving.timeouts) cost: uvicorn's h11 protocol against
the subclass with the limits, both serving a trivial Starlette /health in this process, over loopback, in one run.

Usage: python bench/receive_limits.py [--requests 2000] [--connections 500] [--rounds 10]
Two loads: `--requests` GET /health one after another on one keep-alive connection, and `--connections` requests
each on a new connection (the deadline armed on every connection). Each round runs both sides back to back (which
goes first alternates), so that other load on the machine falls on both; prints the microseconds per request of
each side (median and best round) and the median of the rounds' ratios (with limits / h11).
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from digitpipe.serving.timeouts import receiving_limits


async def health(request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


def start(http) -> int:
    """uvicorn with protocol `http` serving /health on a free loopback port, in a daemon thread; returns the port."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as serve
    listening.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/health", health)])
    server = uvicorn.Server(uvicorn.Config(app, http=http, log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start within 30 s")
        time.sleep(0.05)
    return listening.getsockname()[1]


def keep_alive(port: int, requests: int) -> float:
    """Microseconds per GET /health, `requests` of them on one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    start_time = time.perf_counter()
    for _ in range(requests):
        connection.request("GET", "/health")
        reply = connection.getresponse()
        reply.read()
        assert reply.status == 200
    seconds = time.perf_counter() - start_time
    connection.close()
    return seconds / requests * 1e6


def new_connections(port: int, requests: int) -> float:
    """Microseconds per GET /health, each on a new connection."""
    start_time = time.perf_counter()
    for _ in range(requests):
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/health", headers={"Connection": "close"})
        reply = connection.getresponse()
        reply.read()
        connection.close()
        assert reply.status == 200
    return (time.perf_counter() - start_time) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    ports = {"h11": start("h11"), "with limits": start(receiving_limits(20, 60))}
    for port in ports.values():
        keep_alive(port, 200)  # warm both sides up
    for load, measure, count in (("keep-alive", keep_alive, args.requests),
                                 ("new connection", new_connections, args.connections)):
        times: dict[str, list[float]] = {side: [] for side in ports}
        for round_ in range(args.rounds):
            for side, port in list(ports.items())[::1 if round_ % 2 else -1]:  # who goes first alternates too
                times[side].append(measure(port, count))
        plain, limited = times.values()
        ratio = statistics.median(b / a for a, b in zip(plain, limited))  # each pair ran side by side in time
        print(f"{load:>14}, {count:,} requests a side per round, {args.rounds} rounds: h11 median "
              f"{statistics.median(plain):.0f} us (best {min(plain):.0f}), with limits {statistics.median(limited):.0f}"
              f" us (best {min(limited):.0f}) per request; median of the rounds' ratios {ratio:.3f}")


if __name__ == "__main__":
    main()
