"""Download the canonical MNIST IDX files from public mirrors into the user's cache, verified by MD5."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from digitpipe.errors import UserError
from digitpipe.files import atomic_path

# MD5 of the canonical .gz files (as published with MNIST); a download must match to be kept.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DEFAULT_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
CHUNK = 1 << 16


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/digitpipe/mnist (default ~/.cache/digitpipe/mnist)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitpipe" / "mnist"


def is_cached(dest: Path, files: Mapping[str, str] = MNIST_MD5) -> bool:
    """Whether every file is in `dest` with the right checksum."""
    return all((dest / name).is_file() and md5(dest / name) == digest for name, digest in files.items())


def fetch(dest: Path | None = None, mirrors: Sequence[str] = DEFAULT_MIRRORS, files: Mapping[str, str] = MNIST_MD5,
          attempts: int = 3, backoff: float = 1.0, timeout: float = 30.0,
          progress: Callable[[str, int, int | None], None] | None = None) -> Path:
    """Make sure every file is in `dest`: skip those cached and valid, download the rest (mirrors in order,
    `attempts` tries each with exponential backoff), verify MD5, write to a temporary name and rename."""
    dest = dest or cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        target = dest / name
        if target.is_file() and md5(target) == digest:
            continue
        errors = []
        for mirror in mirrors:
            error = _download_verified(mirror.rstrip("/") + "/" + name, target, digest, attempts, backoff, timeout,
                                       progress)
            if error is None:
                break
            errors.append(f"{mirror}: {error}")
        else:
            raise UserError(f"could not fetch {name} ({'; '.join(errors) or 'no mirrors given'}); "
                            "offline? pass --data PATH with MNIST files or a Kaggle CSV")
    return dest


def _download_verified(url: str, target: Path, digest: str, attempts: int, backoff: float, timeout: float,
                       progress) -> str | None:
    """Download `url` to `target` if its MD5 is `digest`; returns None on success, else why not."""
    error = "not tried"
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            with atomic_path(target) as part:  # renamed to `target` only if the block ends without an error
                got = _download(url, part, timeout, progress, target.name)
                if got != digest:
                    raise _ChecksumMismatch(f"checksum mismatch (MD5 {got}, expected {digest})")
            return None
        except _ChecksumMismatch as exc:  # a bad file stays bad: the next mirror, not another attempt
            return str(exc)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # network trouble: try again
            error = str(getattr(exc, "reason", None) or exc or type(exc).__name__)[:120]
    return error


class _ChecksumMismatch(Exception):
    pass


def _download(url: str, part: Path, timeout: float, progress, name: str) -> str:
    """Stream `url` into `part`; returns the MD5 of what was written; raises if the body is cut short."""
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        while chunk := response.read(CHUNK):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(name, done, total)
        if total is not None and done != total:
            raise OSError(f"connection closed after {done} of {total} bytes")
    return h.hexdigest()


def md5(path: Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
