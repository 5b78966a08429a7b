"""MNIST download against a loopback HTTP mirror started by the test: good files, a corrupt file, a dropped
connection, and the cache that skips what it already holds."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pytest

from digitpipe.data.fetch import fetch, is_cached
from digitpipe.errors import UserError


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /drop/NAME sends half the file under a full Content-Length, then hangs up."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path.startswith("/drop/"):
            body = (self.directory_path / self.path.removeprefix("/drop/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, fixture_dir):
    """A loopback HTTP server over a copy of the fixture's two files; yields (base URL, folder, md5 table)."""
    served = tmp_path / "served"
    served.mkdir()
    files = {}
    for f in fixture_dir.glob("*.gz"):
        (served / f.name).write_bytes(f.read_bytes())
        files[f.name] = hashlib.md5(f.read_bytes()).hexdigest()
    handler = type("Handler", (_Mirror,), {"directory_path": served, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, files, handler
    server.shutdown()


def test_fetch_downloads_verifies_and_then_skips_cached(tmp_path, mirror):
    url, _, files, handler = mirror
    cache = tmp_path / "cache"
    fetch(cache, [url], files, backoff=0)
    assert is_cached(cache, files) and sorted(p.name for p in cache.iterdir()) == sorted(files)
    handler.requests.clear()
    fetch(cache, [url], files, backoff=0)
    assert handler.requests == []  # nothing fetched twice


def test_corrupt_file_is_refused_and_nothing_is_left(tmp_path, mirror):
    url, served, files, _ = mirror
    name = next(iter(files))
    (served / name).write_bytes(b"corrupted" + (served / name).read_bytes()[9:])
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch(cache, [url], {name: files[name]}, backoff=0)
    assert list(cache.iterdir()) == []


def test_dropped_connection_is_retried_then_the_next_mirror_serves(tmp_path, mirror):
    url, _, files, handler = mirror
    cache = tmp_path / "cache"
    fetch(cache, [url + "/drop", url], files, attempts=2, backoff=0)
    assert is_cached(cache, files)
    assert sum(r.startswith("/drop/") for r in handler.requests) == 2 * len(files)  # each file tried twice there
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # no partial download left beside them


def test_unreachable_mirrors_give_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="could not fetch .* pass --data PATH"):
        fetch(tmp_path, ["http://127.0.0.1:9/"], {"x.gz": "0" * 32}, attempts=1, backoff=0, timeout=2)
