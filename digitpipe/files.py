"""Small file helpers used everywhere: atomic writes, checked output paths and one-line error messages (a write
the disk or its permissions refuse among them)."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

from digitpipe.errors import UserError


# Why the system refused a write, and what the user can do about it
REFUSALS = {
    errno.EROFS: ("read-only file system", "write elsewhere, or where it is writable"),
    errno.ENOSPC: ("no space left on the device", "free some space, then run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, then run again"),
    errno.EACCES: ("permission denied", "write elsewhere, or where you may write"),
    errno.EPERM: ("operation not permitted", "write elsewhere, or where you may write"),
}


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary name beside `path` to write to; renamed to `path` if the block succeeds, removed if it
    fails. Readers never see half a file, and two writers never share a temporary name. A write the disk or its
    permissions refuse is one line naming `path` (a UserError)."""
    path = Path(path)
    with refused_as_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        with refused_as_user_error(path):  # inside the try: a full disk is seen before the temporary file goes
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared outputs from the rest of a team
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def refused_as_user_error(path: Path) -> Iterator[None]:
    """A block that writes `path`: a write the disk or its permissions refuse (see `refused_write`) becomes one
    line naming `path`, whatever file of it failed (a temporary name, a file under a folder)."""
    try:
        yield
    except Exception as exc:
        if (refused := refused_write(exc, path)) is None:
            raise
        raise refused from exc


def refused_write(exc: BaseException, path: Path | None = None) -> UserError | None:
    """`exc` as one line when the system refused a write (read-only, full, not permitted: an OSError among its
    causes), naming `path`, else the file the error names; None for any other error. Writers that say only
    "failed" (torch.save's RuntimeError, shutil.Error) count too where the device of `path` is full now."""
    if isinstance(exc, UserError):
        return None
    refused = next((e for e in causes(exc) if _refused(e)), None)
    if refused is not None and (path or _target(refused)):
        return UserError(_cannot_write(path or _target(refused), refused.errno))
    if path is not None and isinstance(exc, (OSError, RuntimeError)) and _full(path):
        return UserError(_cannot_write(path, errno.ENOSPC))
    return None


def _refused(exc: BaseException) -> bool:
    """An OSError that refused a write. Permission errors count only where the file's folder is not writable:
    reading a file can be refused too, and that is no write's failure."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSALS:
        return False
    if exc.errno in (errno.EACCES, errno.EPERM) and _target(exc):
        return unwritable(Path(_target(exc)).parent) is not None
    return True


def _target(exc: OSError) -> str | None:
    """The file an OSError was writing: a copy's destination (filename2), else the one file it names."""
    name = exc.filename2 or exc.filename
    return None if name is None else os.fsdecode(name)


def _cannot_write(path: object, code: int) -> str:
    why, advice = REFUSALS[code]
    return f"cannot write {path}: {why}; {advice}"


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what it was raised from or while handling, nearest first (a library's error wraps the OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unwritable(path: Path) -> int | None:
    """Why nothing can be written at `path` (a file or folder, made where missing), as the errno a write would
    meet: its nearest existing folder is read-only, not this user's to write in, or on a full device; else None."""
    folder = nearest_folder(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        return errno.EROFS if _read_only(folder) else errno.EACCES
    return errno.ENOSPC if _full(folder) else None


def nearest_folder(path: Path) -> Path:
    """`path` where it is a folder, else the nearest of its folders that exists."""
    return next((p for p in (path, *path.parents) if p.is_dir()), Path("."))


def _read_only(folder: Path) -> bool:
    return hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def _full(path: Path) -> bool:
    """Whether the device that holds `path` has no block left for this user (a pseudo file system, /proc, has no
    blocks at all)."""
    if not hasattr(os, "statvfs"):
        return False
    device = os.statvfs(nearest_folder(path))
    return device.f_blocks > 0 and device.f_bavail == 0


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
    with refused_as_user_error(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        with refused_as_user_error(folder):  # inside the try: a full disk is seen before the half-made copy goes
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
    writable(path, flag)


def writable(path: Path, flag: str = "") -> None:
    """Refuse, before any work, an output `path` that cannot be written: a read-only or full disk, a folder not
    this user's (`flag`: the option that named it, if one did)."""
    if code := unwritable(path):
        why, advice = REFUSALS[code]
        named = f"{flag} {path}" if flag else str(path)
        raise UserError(f"{named}: cannot write in {nearest_folder(path).resolve()}: {why}; {advice}")


def writable_database(path: Path, store: str) -> None:
    """Refuse, before any work, a local database (`store`: its URL) that cannot be changed: sqlite writes the file
    in place and its journal beside it, so both must be writable (the folder is made where missing)."""
    code = unwritable(path.parent)
    if code is None and path.exists() and not os.access(path, os.W_OK):
        code = errno.EROFS if _read_only(path.parent) else errno.EACCES
    if code:
        advice = REFUSALS[code][1] if code in (errno.ENOSPC, errno.EDQUOT) else (
            "run where its folder is writable, or use a store elsewhere")
        raise UserError(f"{store}: cannot write {path.resolve()}: {REFUSALS[code][0]}; {advice}")


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
