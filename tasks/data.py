"""Data tasks: load, validate, split."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe import steps
from digitpipe.config import PipelineConfig
from digitpipe.data import Dataset, Split, load_dataset, split_dataset


# NO_CACHE everywhere images travel: hashing 47 MB of pixels for a cache key costs more than the work.
@task(cache_policy=NO_CACHE)
def load_data(path: Path) -> Dataset:
    """Read the dataset from a file or folder."""
    return load_dataset(path)


@task(cache_policy=NO_CACHE)
def validate_data(data: Dataset, min_rows: int) -> None:
    """Stop the flow before training if the data fails its expectations."""
    steps.check_data(data, min_rows)


@task(cache_policy=NO_CACHE)
def split_data(data: Dataset, cfg: PipelineConfig) -> Split:
    """Stratified, seeded train/validation/test split."""
    return split_dataset(data, cfg.test_fraction, cfg.val_fraction, cfg.seed)
