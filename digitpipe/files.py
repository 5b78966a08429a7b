"""Small file helpers used everywhere: atomic writes and one-line error messages."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

from digitpipe.errors import UserError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary name beside `path` to write to; renamed to `path` if the block succeeds, removed if it
    fails. Readers never see half a file, and two writers never share a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared outputs from the rest of a team
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, payload: object) -> Path:
    """Write `payload` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(payload, indent=2) + "\n")


def write_once(folder: Path, write: Callable[[Path], None], last: str) -> Path:
    """`folder`, made by `write(empty folder)` unless a complete copy is there already (one holding the file
    `last`, which `write` writes last); written under a temporary name and renamed, so that runs at once never
    share a half-made folder and a failed `write` leaves nothing behind."""
    if (folder / last).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        write(fresh)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    try:
        fresh.rename(folder)
    except OSError:  # there already: another run's complete copy, or a crashed one's leftover (no `last`)
        if (folder / last).is_file():
            shutil.rmtree(fresh)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            fresh.rename(folder)
    return folder


def first_line(exc: BaseException | str, limit: int | None = None) -> str:
    """The first line of an exception's message (or its type's name), at most `limit` characters cut at a word's
    end with an ellipsis: enough for a one-line error, never a word cut in two."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if limit is None or len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_folder(path: Path, flag: str) -> Path:
    """`path` as a folder a command writes in, refused in one line before any work where it cannot be one."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: a file, not a folder to write in")
    _under_folders(path, flag)
    return path


def output_file(path: Path, flag: str) -> Path:
    """`path` as a file a command writes, refused in one line before any work where it cannot be one."""
    if path.is_dir():
        raise UserError(f"{flag} {path}: a folder, not a file to write")
    _under_folders(path, flag)
    return path


def _under_folders(path: Path, flag: str) -> None:
    if (blocked := file_in_the_way(path)) is not None:
        raise UserError(f"{flag} {path}: {blocked} is a file, not a folder to write in")


def file_in_the_way(path: Path) -> Path | None:
    """The nearest folder of `path` that exists as a file (nothing can be written under it), else None."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def load_yaml(text: str | bytes) -> object:
    """A YAML document, where a mapping that names a key twice is refused (yaml.YAMLError naming the key and its
    line): the later value would otherwise win without a word."""
    import yaml

    return yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 (a SafeLoader)


@functools.cache
def _unique_keys_loader():
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, typing.Hashable):
                    continue  # SafeLoader refuses it itself
                if key in seen:
                    where = key_node.start_mark
                    said = f"{key!r} is given twice (line {where.line + 1})"
                    raise yaml.constructor.ConstructorError(None, None, said, where)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys
