"""Labelled feedback as it travels between the readers, the store and training: the digits of one scored file
(or one batch of the serving page's answers) with their true labels, and all of it as one dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.data.dataset import Dataset
from digitpipe.files import atomic_path


@dataclass(frozen=True)
class Feedback:
    """Labelled digits from one scored file: images, their true labels and their ImageIds in that file."""

    images: np.ndarray  # uint8 n x 28 x 28
    labels: np.ndarray  # int64
    image_ids: np.ndarray  # int64, 1-based rows of the scored file (served: the request's number)
    source: str
    origin: str = "file"  # "file": labels that arrived for a scored file; "web": answers on the serving page

    def save(self, path: Path) -> Path:
        """The digits as a compressed .npz at `path` (written atomically)."""
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez_compressed(f, images=self.images, labels=self.labels, image_ids=self.image_ids)
        return path

    @classmethod
    def load(cls, path: Path, source: str = "", origin: str = "file") -> Feedback:
        """Feedback saved by `save`."""
        with np.load(path) as saved:
            return cls(saved["images"], saved["labels"], saved["image_ids"], source or str(path), origin)

    def dataset(self) -> Dataset:
        """The labelled digits as a Dataset."""
        return Dataset(self.images, self.labels, self.source)


def combine(feedback: list[Feedback]) -> Dataset | None:
    """All feedback (oldest first) as one dataset, each distinct image once with its latest label: the same digit
    may be labelled in several batches, and a later label corrects an earlier one."""
    if not feedback:
        return None
    data = Dataset(np.concatenate([f.images for f in feedback]), np.concatenate([f.labels for f in feedback]),
                   "feedback")
    _, last = np.unique(data.image_hashes()[::-1], return_index=True)
    return data.subset(np.sort(len(data) - 1 - last))
