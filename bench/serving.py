"""What `digitpipe serve` costs over onnxruntime alone, for fastcnn and LeNet, in one run; then an alias move under
load.

Usage: python bench/serving.py [MNIST_DIR] [--seconds 30] [--clients 50] [--calls 2000]
1. A store: `digitpipe run --models fastcnn,lenet --epochs 1` on 10,000 digits (accuracy is not the point).
2. Per model, one digit at a time: onnxruntime alone (OnnxScorer), then inside the service (the ASGI app called in
   this process, no network): p50 and p99 of each, and their ratio.
3. Per model, over loopback HTTP: `digitpipe serve` in its own process, `--clients` concurrent clients (aiohttp, in
   this process, on the same cores) posting one digit each for `--seconds`: requests/s, p50, p99, errors, and the
   server's memory (RSS) at the start and end of the load.
4. The champion moved to the other version half way through such a load: requests answered by each version, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED_MNIST, mnist_path

from digitpipe.config import PromotionConfig, TrackingConfig, ServingConfig
from digitpipe.data import load_dataset
from digitpipe.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, write_idx
from digitpipe.onnx_scorer import OnnxScorer
from flows.startup import free_port

DIGITPIPE = Path(sys.executable).with_name("digitpipe")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as the CLI sets it


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


def make_store(folder: Path, data: Path) -> Path:
    """10,000 digits, a config, and a store with fastcnn (v1) and lenet (v2) registered; returns the config."""
    digits = load_dataset(data)
    write_idx(folder / "data" / "train-images-idx3-ubyte.gz", digits.images[:10_000], IDX_IMAGES_MAGIC)
    write_idx(folder / "data" / "train-labels-idx1-ubyte.gz", digits.labels[:10_000], IDX_LABELS_MAGIC)
    config = folder / "mlflow.yaml"
    settings = TrackingConfig(tracking_uri=f"sqlite:///{folder}/mlflow.db", promotion=PromotionConfig(min_accuracy=0),
                              serving=ServingConfig(poll_seconds=1, requests_dir=str(folder / "served")))
    config.write_text(json.dumps(settings.model_dump(mode="json", exclude={"config_file"}, exclude_defaults=True)))
    subprocess.run([DIGITPIPE, "run", "--data", folder / "data", "--models", "fastcnn,lenet", "--epochs", "1",
                    "--quiet", "--out", folder / "out", "--config", config], cwd=folder, check=True)
    return config


def one_at_a_time(config: Path, version: str, images: np.ndarray, calls: int) -> None:
    """onnxruntime alone against the service's ASGI app, one digit per call, alternating in blocks."""
    import httpx

    from digitpipe.config import load_tracking_config
    from digitpipe.serving.app import build_app
    from digitpipe.serving.follower import ModelFollower
    from digitpipe.serving.service import Service
    from digitpipe.tracking import tracker_for

    tracking = load_tracking_config(config)
    tracker = tracker_for(tracking, create=False)
    follower = ModelFollower(f"models:/digits/{version}", tracking, 3600)
    scorer = OnnxScorer(follower.current.path)
    app = build_app(Service(follower, tracker, tracking))
    print(f"{follower.current.names()['model']} (v{version})")
    inside_app = []

    async def timed_app(scope, receive, send):  # the service's own time: from the request's arrival to its end
        start = time.perf_counter()
        await app(scope, receive, send)
        if scope["type"] == "http":
            inside_app.append(time.perf_counter() - start)
    bodies = [json.dumps({"images": [images[i % len(images)].tolist()]}) for i in range(calls)]
    alone, inside = [], []

    async def service_calls() -> None:
        transport = httpx.ASGITransport(app=timed_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for block in range(0, calls, 100):
                for i in range(block, block + 100):
                    start = time.perf_counter()
                    scorer.scores(images[i % len(images)][None])
                    alone.append(time.perf_counter() - start)
                for i in range(block, block + 100):
                    start = time.perf_counter()
                    reply = await client.post("/predict", content=bodies[i],
                                              headers={"Content-Type": "application/json"})
                    inside.append(time.perf_counter() - start)
                    assert reply.status_code == 200, reply.text

    asyncio.run(service_calls())
    print(f"  onnxruntime alone: {percentiles(alone)}")
    print(f"  inside the service (ASGI app, request in to response out): {percentiles(inside_app)} "
          f"({np.percentile(inside_app, 50) / np.percentile(alone, 50):.1f}x onnxruntime's p50); with the "
          f"in-process HTTP client: {percentiles(inside)}")
    follower.stop()


async def load(url: str, images: np.ndarray, clients: int, seconds: float, rate: float | None = None,
               during=None) -> dict:
    """`clients` concurrent clients posting one digit each until `seconds` pass, together `rate` requests/s
    (None: each as fast as it is answered); `during` runs half way."""
    import aiohttp

    bodies = [json.dumps({"images": [image.tolist()]}).encode() for image in images[:500]]
    latencies, errors, versions = [], 0, {}
    deadline = time.monotonic() + seconds

    async def client(n: int, session) -> None:
        nonlocal errors
        i, interval = n, clients / rate if rate else 0
        due = time.monotonic() + interval * n / clients  # clients evenly staggered
        while time.monotonic() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += interval
            start = time.perf_counter()
            try:
                async with session.post(url + "/predict", data=bodies[i % len(bodies)],
                                        headers={"Content-Type": "application/json"}) as reply:
                    await reply.read()
                    ok = reply.status == 200
                    version = reply.headers.get("X-Model-Version")
            except aiohttp.ClientError:
                ok, version = False, None
            latencies.append(time.perf_counter() - start)
            errors += not ok
            versions[version] = versions.get(version, 0) + 1
            i += clients

    async def midway() -> None:
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(during)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(n, session) for n in range(clients)), *([midway()] if during else []))
        wall = time.perf_counter() - started
    return {"requests": len(latencies), "rps": len(latencies) / wall, "errors": errors, "versions": versions,
            "latencies": latencies}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(config: Path, model: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([DIGITPIPE, "serve", "--model", model, "--port", str(port), "--config", config],
                               cwd=folder, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(process.stderr.read())


def over_loopback(config: Path, folder: Path, version: str, images: np.ndarray, args) -> None:
    process, url = serve(config, f"models:/digits/{version}", folder)
    try:
        asyncio.run(load(url, images, 5, 3))  # warm-up: sessions, connections
        before = rss_mb(process.pid)
        paced = asyncio.run(load(url, images, args.clients, args.seconds, args.rate))
        after = rss_mb(process.pid)
        flat_out = asyncio.run(load(url, images, args.clients, args.seconds / 2))
        end = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    for name, result in ((f"{args.rate:.0f} requests/s offered", paced), ("as fast as answered", flat_out)):
        print(f"  loopback, {args.clients} clients, {name}: {result['rps']:.0f} requests/s, "
              f"{percentiles(result['latencies'])}, {result['errors']} errors of {result['requests']:,}")
    print(f"  server RSS {before:.0f} MB before the paced load, {after:.0f} MB after it, {end:.0f} MB at the end")


def alias_move(config: Path, folder: Path, images: np.ndarray, args) -> None:
    process, url = serve(config, "models:/digits@champion", folder)
    import urllib.request

    first = json.loads(urllib.request.urlopen(url + "/health").read())["version"]
    other = "2" if first == "1" else "1"
    try:
        result = asyncio.run(load(url, images, args.clients, args.seconds, args.rate, during=lambda: subprocess.run(
            [DIGITPIPE, "promote", "--version", other, "--config", config], cwd=folder, check=True,
            capture_output=True)))
    finally:
        process.terminate()
        process.wait(60)
    counts = ", ".join(f"v{v}: {n:,}" for v, n in sorted(result["versions"].items(), key=str))
    print(f"alias move v{first} -> v{other} under {args.clients} clients: {counts}; "
          f"{result['errors']} errors of {result['requests']:,}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=str(SHARED_MNIST))
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=300, help="requests/s the clients offer together")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    data = mnist_path([sys.argv[0], args.data])
    images = load_dataset(data).images[-1000:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = make_store(folder, data)
        for version in ("1", "2"):
            one_at_a_time(config, version, images, args.calls)
            over_loopback(config, folder, version, images, args)
        alias_move(config, folder, images, args)


if __name__ == "__main__":
    main()
