"""The training key: everything that decides what a model trains into. A version registered with the same key is the
same model, so a run does not train it again (flows.training looks keys up in the registry, which every worker
sees, rather than in a cache of one machine)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

from digitpipe.data import Split

LIBRARY = Path(__file__).resolve().parent
LOCK_FILE = LIBRARY.parent / "requirements.lock"  # a checkout's; an installed wheel has none beside it


@functools.cache
def code_version() -> str:
    """A hash of the library's Python sources and of the lock file (where the library is installed without one:
    of every installed distribution's version). Not the git commit: a change to a test or a document is no reason
    to train again, and an uncommitted change to the library is."""
    digest = hashlib.sha256()
    for path in sorted(LIBRARY.rglob("*.py")):
        digest.update(path.relative_to(LIBRARY).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    if LOCK_FILE.is_file():
        digest.update(LOCK_FILE.read_bytes())
    else:
        digest.update("\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                                       if d.metadata["Name"])).encode())
    return digest.hexdigest()[:16]


def training_key(name: str, spec: object, seed: int, data_digest: str, recipe: dict, split: Split) -> str:
    """The key of training model `name` with `spec` and `seed` on `split` (of the data `data_digest`, split by
    `recipe`): the training and validation parts' digests carry any labelled feedback added to them."""
    identity = {"model": name, "spec": dataclasses.asdict(spec), "seed": seed, "data_digest": data_digest,
                "split": recipe, "train": split.train.digest, "val": split.val.digest, "code": code_version()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]
