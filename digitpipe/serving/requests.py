"""What a server keeps of its answers: each served digit on disk (rotated JSON-lines files, bounded), so that the
page's "Right" / "no, it was ..." can be joined to its pixels, even after a restart, and the one label each answer
may get; and the answers people gave, recorded as labelled feedback in batches (one feedback run per batch, not one
per click)."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.files import atomic_path, first_line
from digitpipe.runtime import utc_now

log = logging.getLogger("digitpipe.serve")
FILES = 4  # the answers kept are spread over this many files: the oldest file goes when a new one starts


@dataclass(frozen=True)
class Answer:
    """One served digit: its request id and number, when, which version answered, what it said, its pixels."""

    request_id: str
    number: int
    at: str
    version: str | None
    digit: int
    pixels: bytes  # 784 uint8, row-major

    def image(self) -> np.ndarray:
        return np.frombuffer(self.pixels, np.uint8).reshape(28, 28)

    def line(self) -> str:
        return json.dumps({"id": self.request_id, "n": self.number, "at": self.at, "version": self.version,
                           "digit": self.digit, "pixels": base64.b64encode(self.pixels).decode()}) + "\n"

    @classmethod
    def parse(cls, line: str | bytes) -> Answer | None:
        try:
            d = json.loads(line)
            return cls(d["id"], int(d["n"]), d["at"], d["version"], int(d["digit"]), base64.b64decode(d["pixels"]))
        except (ValueError, KeyError, TypeError):
            return None  # a line cut short when the server was killed


class RequestLog:
    """The last `keep` answers, in `folder`/requests-NNNNNN.jsonl files, found again by request id (in memory: each
    id's file and offset only, so that memory stays flat while the files hold the pixels), and the label a person
    gave each (a line {"id", "label"} in the same files: one label per answer, kept across restarts)."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder, self.per_file = Path(folder), max(1, keep // FILES)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._where: dict[str, tuple[Path, int]] = {}
        self._ids: dict[Path, list[str]] = {}  # per file, the ids it holds (dropped with it)
        self._labels: dict[str, int] = {}
        last = 0
        for path in sorted(self.folder.glob("requests-*.jsonl")):
            self._ids[path] = []
            offset = 0
            for line in path.read_bytes().splitlines(keepends=True):
                if answer := Answer.parse(line):
                    self._ids[path].append(answer.request_id)
                    self._where[answer.request_id] = (path, offset)
                    last = max(last, answer.number)
                elif labelled := _label_line(line):
                    self._labels[labelled[0]] = labelled[1]
                offset += len(line)
        self._labels = {rid: label for rid, label in self._labels.items() if rid in self._where}
        self._next = last + 1
        self._file = None
        self._open(next(reversed(self._ids), None) or self._path(1))

    def _path(self, number: int) -> Path:
        return self.folder / f"requests-{number:06d}.jsonl"

    def _open(self, path: Path) -> None:
        if self._file:
            self._file.close()
        self._file = path.open("ab")
        if self._file.tell() and _last_byte(path) != b"\n":
            self._file.write(b"\n")  # end a line cut short by a kill: the next answer starts a line of its own
        self._ids.setdefault(path, [])
        self._current = path

    def add(self, images: np.ndarray, digits: np.ndarray, version: str | None) -> list[str]:
        """Keep one answer per image; returns their request ids."""
        at = utc_now()
        with self._lock:
            ids = []
            for image, digit in zip(images, digits, strict=True):
                answer = Answer(uuid.uuid4().hex, self._next, at, version, int(digit), image.tobytes())
                self._next += 1
                if len(self._ids[self._current]) >= self.per_file:
                    self._rotate()
                self._where[answer.request_id] = (self._current, self._file.tell())
                self._file.write(answer.line().encode())
                self._ids[self._current].append(answer.request_id)
                ids.append(answer.request_id)
            self._file.flush()
            return ids

    def _rotate(self) -> None:
        number = int(self._current.stem.split("-")[1]) + 1
        self._open(self._path(number))
        while len(self._ids) > FILES:
            oldest = next(iter(self._ids))
            for request_id in self._ids.pop(oldest):
                self._where.pop(request_id, None)
                self._labels.pop(request_id, None)
            oldest.unlink(missing_ok=True)

    def find(self, request_id: str) -> Answer | None:
        """The answer kept under `request_id`, read back from its file; None when it is not (or no longer) kept."""
        with self._lock:
            path, offset = self._where.get(request_id, (None, 0))
            if path is None:
                return None
            with path.open("rb") as f:
                f.seek(offset)
                return Answer.parse(f.readline())

    def label(self, request_id: str, label: int) -> int | None:
        """Keep `label` as the answer's one label; returns the label kept before instead, if it has one."""
        with self._lock:
            if (kept := self._labels.get(request_id)) is not None or request_id not in self._where:
                return kept  # None for an answer rotated out since it was found: nothing to label
            self._file.write(json.dumps({"id": request_id, "label": label}).encode() + b"\n")
            self._file.flush()
            self._labels[request_id] = label
            return None

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _label_line(line: bytes) -> tuple[str, int] | None:
    try:
        d = json.loads(line)
        return str(d["id"]), int(d["label"])
    except (ValueError, KeyError, TypeError):
        return None


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1)


class FeedbackQueue:
    """People's answers waiting to be recorded: `record(answers, labels)` is called with a batch once `batch` have
    come or `seconds` have passed (and at `close`); a batch that fails to record is kept for the next try."""

    def __init__(self, record: Callable[[list[Answer], list[int]], None], batch: int, seconds: float,
                 unrecorded: Path) -> None:
        self.record, self.batch, self.seconds, self.unrecorded = record, batch, seconds, Path(unrecorded)
        self._pending: dict[str, tuple[Answer, int]] = {}  # by request id (RequestLog lets each have one label)
        if self.unrecorded.exists():  # what the last run could not record before it stopped
            for line in self.unrecorded.read_text().splitlines():
                label, _, text = line.partition("\t")
                if (answer := Answer.parse(text)) and label.isdigit():
                    self._pending[answer.request_id] = (answer, int(label))
        self._lock, self._wake, self._stop = threading.Lock(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="digitpipe-feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, answer: Answer, label: int) -> int:
        """Queue one answer; returns how many are waiting."""
        with self._lock:
            self._pending[answer.request_id] = (answer, label)
            waiting = len(self._pending)
        if waiting >= self.batch:
            self._wake.set()
        return waiting

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Record what is waiting now, as one batch per version that answered."""
        with self._lock:
            taken, self._pending = self._pending, {}
        by_version: dict[str | None, list[tuple[Answer, int]]] = {}
        for answer, label in taken.values():
            by_version.setdefault(answer.version, []).append((answer, label))
        for items in by_version.values():
            try:
                self.record([a for a, _ in items], [label for _, label in items])
            except Exception as exc:  # the store may be down: keep them for the next try (newer answers win)
                log.warning("cannot record %d feedback answers yet (%s)", len(items), first_line(exc, 160))
                with self._lock:
                    self._pending = {a.request_id: (a, label) for a, label in items} | self._pending

    def close(self) -> None:
        """Record what waits; what the store still refuses is kept in `unrecorded` for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()
        with self._lock:
            if self._pending:
                with atomic_path(self.unrecorded) as tmp:
                    tmp.write_text("".join(f"{label}\t{a.line()}" for a, label in self._pending.values()))
                log.warning("%d feedback answers kept in %s until the store takes them", len(self._pending),
                            self.unrecorded)
            else:
                self.unrecorded.unlink(missing_ok=True)
