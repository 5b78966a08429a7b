"""How soon a command stops: `run` on the committed 1,000-image fixture signalled at named points
(DIGITPIPE_TEST_PAUSE_AT), and `models`/`run` against a store that cannot be reached (a closed port, a listener
that never answers). Seconds from the signal (or from the start, for a store) to the exit, beside the issue's
promises (a couple of seconds; ~15 s). Usage: python bench/stop_times.py"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITPIPE = str(Path(sys.executable).with_name("digitpipe"))
FIXTURE = ROOT / "tests" / "fixtures" / "mnist-1000"
RUN = ["run", "--data", str(FIXTURE), "--models", "lenet", "--epochs", "3", "--quiet"]


def stop_seconds(folder: Path, point: str, signum: int) -> tuple[float, int]:
    """Seconds from `signum` at `point` to the exit of a `run` in `folder`, and its exit code."""
    env = {**os.environ, "DIGITPIPE_TEST_PAUSE_AT": point}
    command = subprocess.Popen([DIGITPIPE, *RUN], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    for line in command.stderr:
        if line.startswith(f"digitpipe: paused at {point}"):
            break
    start = time.monotonic()
    command.send_signal(signum)
    command.communicate(timeout=120)
    return time.monotonic() - start, command.returncode


def store_seconds(folder: Path, uri: str, args: list[str]) -> tuple[float, int]:
    """Seconds from the start to the exit of a command against the store at `uri`, and its exit code."""
    start = time.monotonic()
    done = subprocess.run([DIGITPIPE, *args], cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, timeout=300)
    return time.monotonic() - start, done.returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for point, signum in (("epoch 1", signal.SIGINT), ("epoch 1", signal.SIGTERM), ("registered", signal.SIGTERM),
                              ("gate", signal.SIGINT)):
            seconds, code = stop_seconds(Path(tmp), point, signum)
            rows.append((f"run, {signal.Signals(signum).name} at {point}", seconds, code, 2.0))
        with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            for name, uri in (("closed port", f"http://127.0.0.1:{free_port()}"),
                              ("listener that never answers", f"http://127.0.0.1:{silent.getsockname()[1]}")):
                for args in (["models"], [*RUN[:-1], "--out", "out"]):
                    seconds, code = store_seconds(Path(tmp), uri, args)
                    rows.append((f"{args[0]}, store on a {name}", seconds, code, 15.0))
    print(f"{'case':<48} {'seconds':>8} {'exit':>5} {'promised':>9} {'ratio':>6}")
    for case, seconds, code, promised in rows:
        print(f"{case:<48} {seconds:>8.2f} {code:>5} {promised:>9.1f} {seconds / promised:>6.2f}")


if __name__ == "__main__":
    main()
