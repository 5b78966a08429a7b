"""Fixtures the model tests share."""

import pytest

from digitpipe.data import split_dataset


@pytest.fixture(scope="module")
def split(digits):
    """The book's 75/25 split of the committed 1,000-digit fixture."""
    return split_dataset(digits)
