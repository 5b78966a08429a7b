"""Scoring files: stream an input in chunks through an OnnxScorer into predictions, rejects and a JSON sidecar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from digitpipe import interrupts
from digitpipe.config import MonitoringConfig
from digitpipe.errors import DataError, UserError
from digitpipe.data.chunks import Chunk
from digitpipe.data.reader import read_chunks
from digitpipe.files import atomic_path, file_in_the_way, writable, write_json
from digitpipe.monitoring.drift import BatchProfile, Reference
from digitpipe.onnx_scorer import OnnxScorer, probabilities
from digitpipe.records.drift import DriftKind, DriftVerdict
from digitpipe.records.models import ModelIdentity

if TYPE_CHECKING:
    from digitpipe.monitoring.alarms import FeedbackResult
    from digitpipe.tracking import Tracker

READ_ROWS = 16_384  # rows read per chunk: bounds memory (~50 MB of CSV text) whatever the input size
REJECTS_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string())])


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring run did: counts, speed, and where everything went."""

    input: str
    output: str
    rejects_file: str
    scored: int
    rejected: int
    seconds: float
    model: ModelIdentity
    accuracy: float | None = None  # only when the input carries labels
    drift: DriftVerdict | None = None  # against the model's training data (digitpipe.monitoring.drift)

    @property
    def reject_fraction(self) -> float:
        total = self.scored + self.rejected
        return self.rejected / total if total else 0.0

    @property
    def rows_per_second(self) -> float:
        return (self.scored + self.rejected) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        accuracy = "" if self.accuracy is None else f", accuracy {self.accuracy:.2%} against the input's labels"
        return (f"scored {self.scored:,} rows, rejected {self.rejected:,} ({self.reject_fraction:.2%}) in "
                f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s){accuracy} -> {self.output}")

    def as_dict(self) -> dict:
        """The report as its JSON sidecar holds it (and the scoring flow returns it)."""
        return {**asdict(self), "model": self.model.params(), "drift": self.drift and self.drift.as_dict(),
                "reject_fraction": self.reject_fraction, "rows_per_second": self.rows_per_second}


def score_file(scorer: OnnxScorer, input_path: Path, output: Path, model: ModelIdentity, probabilities: bool = False,
               progress: Callable[[int], None] | None = None, chunk_rows: int = READ_ROWS,
               reference: Reference | None = None, thresholds: MonitoringConfig | None = None) -> ScoreReport:
    """Score `input_path` chunk by chunk into `output` (CSV `ImageId,Label` or Parquet), plus rejects and a JSON
    sidecar; with the model's `reference`, the batch is profiled on the way and its drift verdict reported.

    Every file is written under a temporary name and renamed at the end: a failure (a full disk too) leaves none of
    them.
    """
    start = time.perf_counter()
    _, rejects_path, _ = checked_outputs(input_path, output)
    profile = BatchProfile(reference) if reference else None
    scored = correct = labelled = 0
    all_rejects: list[tuple[int, str]] = []
    with _table_writer(output, _output_schema(probabilities)) as write:
        for chunk in _read_ahead(read_chunks(input_path, chunk_rows, bad_rows="reject")):
            scores = scorer.scores(chunk.images)
            predicted = scores.argmax(1)
            write(_output_table(chunk.rows, predicted, scores if probabilities else None))
            if profile:
                profile.add(chunk.images, scores)
            all_rejects += chunk.rejects
            scored += len(chunk.rows)
            if chunk.labels is not None:
                labelled += len(chunk.labels)
                correct += int(np.sum(predicted == chunk.labels))
            if progress:
                progress(len(chunk.rows) + len(chunk.rejects))
            interrupts.pause_at("scored chunk")
        if scored + len(all_rejects) == 0:  # a header alone: nothing was scored, so nothing is written
            raise DataError(input_path, "no rows to score")
        report = ScoreReport(str(input_path), str(output), str(rejects_path), scored, len(all_rejects),
                             time.perf_counter() - start, model, correct / labelled if labelled else None,
                             _drift(profile, thresholds or MonitoringConfig(), model))
        with _table_writer(rejects_path, REJECTS_SCHEMA) as write_rejects:
            write_rejects(pa.table({"row": [r for r, _ in all_rejects], "reason": [w for _, w in all_rejects]},
                                   schema=REJECTS_SCHEMA))
            _write_sidecar(output, report)  # inside both writers: a full disk leaves none of the three files
    return report


def checked_outputs(input_path: Path, output: Path, also_read: Sequence[Path] = ()) -> tuple[Path, Path, Path]:
    """The files scoring `input_path` into `output` writes (predictions, rejects, the JSON report), checked before
    any work: none may replace what is read (the input file or a file of its folder, and `also_read`: the model
    file, the reference, the config) or be a folder, and each must have a folder to go in."""
    written = (output, output.with_name(output.name + ".rejects.csv"), output.with_name(output.name + ".json"))
    read = [*(input_path.iterdir() if input_path.is_dir() else [input_path]), *also_read]
    for path in written:
        if any(_same_file(path, other) for other in read):
            raise UserError(f"{output}: writing it would replace the input {path}; choose another output name")
        if path.is_dir():
            raise UserError(f"{output}: {path} is a folder, not a file to write")
    if (blocked := file_in_the_way(output)) is not None:
        raise UserError(f"{output}: {blocked} is a file, not a folder to write in")
    writable(output)  # a read-only or full disk, said before the model is loaded
    return written


def _same_file(path: Path, other: Path) -> bool:
    """Whether the two name one file: the same path, or (both existing) one file under two names, a hard link."""
    if path.resolve() == other.resolve():
        return True
    try:
        return path.exists() and other.exists() and path.samefile(other)
    except OSError:
        return False


def _drift(profile: BatchProfile | None, thresholds: MonitoringConfig, model: ModelIdentity) -> DriftVerdict:
    named = f"v{model.version}" if model.version else model.uri
    if profile is None:
        reason = (f"{named} has no usable monitor reference: `digitpipe monitor reference` builds one"
                  if model.version else f"{named} is a .onnx file: give --reference to check for drift")
        return DriftVerdict(DriftKind.NO_REFERENCE, reason=reason)
    return profile.verdict(thresholds).against(named, model.version)


def _output_schema(probabilities: bool) -> pa.Schema:
    fields = [("ImageId", pa.int64()), ("Label", pa.int64())]
    return pa.schema(fields + ([(f"prob_{d}", pa.float32()) for d in range(10)] if probabilities else []))


def _output_table(rows: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None) -> pa.Table:
    columns = {"ImageId": pa.array(rows, pa.int64()), "Label": pa.array(predicted, pa.int64())}
    if scores is not None:
        probs = probabilities(scores)
        columns |= {f"prob_{d}": pa.array(probs[:, d], pa.float32()) for d in range(10)}
    return pa.table(columns)


def _write_sidecar(output: Path, report: ScoreReport) -> None:
    write_json(output.with_name(output.name + ".json"), report.as_dict())


@contextlib.contextmanager
def _table_writer(path: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """Streams pyarrow tables to CSV or Parquet (by suffix); the file appears only if the block succeeds."""
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            sink, writer = None, pq.ParquetWriter(tmp, schema)
        else:
            sink = tmp.open("wb")
            sink.write((",".join(schema.names) + "\n").encode())  # pyarrow would quote the header names
            writer = pacsv.CSVWriter(sink, schema, write_options=pacsv.WriteOptions(include_header=False))
        try:
            yield lambda table: writer.write_table(table.cast(schema))
        finally:
            writer.close()
            if sink is not None:
                sink.close()


def _read_ahead(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Read and parse the next chunk on a thread while the current one is scored (pyarrow's parser and
    onnxruntime both release the GIL, so the two overlap)."""
    with ThreadPoolExecutor(1, thread_name_prefix="digitpipe-read") as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def score_beside(model_path: Path, identity: ModelIdentity, input_path: Path, suffix: str, probabilities: bool,
                 reference: Reference | None, thresholds: MonitoringConfig) -> ScoreReport:
    """Score one input file into INPUT + suffix beside it, checking it for drift against `reference`."""
    output = input_path.with_name(input_path.name + suffix)
    return score_file(OnnxScorer(model_path), input_path, output, identity, probabilities=probabilities,
                      reference=reference, thresholds=thresholds)


def record_scored_labels(tracker: Tracker, model_path: Path, report: ScoreReport,
                         monitoring: MonitoringConfig) -> FeedbackResult | None:
    """A scored file that carried its labels is labelled feedback: live accuracy logged, digits kept in the store."""
    from digitpipe.monitoring.alarms import record_feedback
    from digitpipe.monitoring.feedback import labelled_in_file

    labelled = labelled_in_file(Path(report.input)) if report.accuracy is not None else None
    return labelled and record_feedback(tracker, labelled, model_path, report.model, monitoring)
