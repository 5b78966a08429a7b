"""The one in-memory dataset type every reader returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
N_CLASSES = 10
# A pixel brighter than this is ink; scanner noise stays below it. The one threshold of validation's ink fraction and
# the monitor's features, so the two describe the same strokes.
INK = 32


@dataclass(frozen=True)
class Dataset:
    """uint8 images N x 28 x 28, int64 labels (or None for unlabelled data), and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str = ""
    _digest: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"images must be uint8 N x 28 x 28, got {self.images.dtype} {self.images.shape}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def digest(self) -> str:
        """SHA-256 of pixels and labels: equal for the same digits whatever file format they came in."""
        if not self._digest:  # cached: hashing 47 MB costs ~0.1 s
            h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
            if self.labels is not None:
                h.update(self.labels.astype(np.uint8).tobytes())
            self._digest.append(h.hexdigest())
        return self._digest[0]

    def image_hashes(self) -> np.ndarray:
        """A 64-bit hash of each image's pixels (uint64): the same digit has the same hash in any file, split or run."""
        rows = np.ascontiguousarray(self.flat())
        return np.frombuffer(b"".join(hashlib.blake2b(row, digest_size=8).digest() for row in rows), dtype="<u8")

    def flat(self) -> np.ndarray:
        """Images as an N x 784 uint8 matrix (a view, no copy)."""
        return self.images.reshape(len(self), N_PIXELS)

    def class_counts(self) -> list[int]:
        """Images per digit 0..9 (labelled data only)."""
        return np.bincount(self.labels, minlength=N_CLASSES).tolist()

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows at `index`, as a new dataset."""
        labels = None if self.labels is None else self.labels[index]
        return Dataset(self.images[index], labels, self.source)
