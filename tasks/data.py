"""Data tasks: load, validate, explore, split."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe import pipeline
from digitpipe.config import PipelineConfig
from digitpipe.data import Dataset, Split, load_dataset, split_by_protocol
from digitpipe.feedback import combine
from digitpipe.tracking import RunLog
from digitpipe.validation import ValidationReport
from tasks import IO_RETRIES


# NO_CACHE everywhere images travel: hashing 47 MB of pixels for a cache key costs more than the work.
@task(cache_policy=NO_CACHE)
def load_data(path: Path, protocol: str) -> Dataset:
    """Read the dataset from a file or folder (a folder's train pair; for the standard protocol it must have one)."""
    return load_dataset(path, part="train" if protocol == "standard" else None)


@task(cache_policy=NO_CACHE)
def validate_data(data: Dataset, min_rows: int, docs_dir: Path) -> ValidationReport:
    """Stop the flow before training if the data fails its expectations; the report (and GX data docs) otherwise."""
    return pipeline.check_data(data, min_rows, docs_dir)


@task(cache_policy=NO_CACHE)
def explore_data(data: Dataset, cache: Path) -> Path:
    """The book's exploration (numbers, pictures, HTML), computed once per dataset digest."""
    return pipeline.explore(data, cache)


@task(cache_policy=NO_CACHE)
def split_data(data: Dataset, cfg: PipelineConfig) -> Split:
    """The book's protocol (stratified 75/25 of `data`) or the standard one (test on the folder's t10k files)."""
    return split_by_protocol(data, cfg.protocol, cfg.data, cfg.test_fraction, cfg.val_fraction, cfg.seed)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def gather_feedback(runs: RunLog) -> tuple[Dataset | None, int]:
    """Every labelled feedback digit in the store, each distinct image once with its latest label (None when there
    is none), and when the newest of those feedback runs started (epoch ms)."""
    found = runs.feedback_runs()
    return combine(runs.load_feedback([run_id for run_id, _ in found])), max((ms for _, ms in found), default=0)
