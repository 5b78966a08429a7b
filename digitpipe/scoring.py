"""Batch scoring on onnxruntime: one session, reused, fed large batches."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from digitpipe.data.stream import stream_chunks
from digitpipe.errors import DataError
from digitpipe.evaluate import probabilities
from digitpipe.runtime import available_cores

SCORE_BATCH = 4096
READ_ROWS = 16_384  # rows read per chunk: bounds memory (~50 MB of CSV text) whatever the input size
REJECTS_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string())])


class OnnxScorer:
    """Scores uint8 digit images with an ONNX model that follows the digitpipe contract (raw pixels in, [N, 10] out)."""

    def __init__(self, path: str | Path, batch_size: int = SCORE_BATCH) -> None:
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = available_cores()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for missing or corrupt files
            raise DataError(path, f"cannot load as an ONNX model ({str(exc).splitlines()[0][:200]})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_rank = len(model_input.shape)  # 2: [N, 784]; 4: [N, 1, 28, 28]

    def as_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images N x 28 x 28 as this model's float input: [N, 784] or [N, 1, 28, 28]."""
        return images.reshape((-1, 784) if self.input_rank == 2 else (-1, 1, 28, 28)).astype(np.float32)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """First output of the model ([N, 10] scores or probabilities) for uint8 images N x 28 x 28."""
        out = [
            self.session.run(None, {self.input_name: self.as_input(images[i : i + self.batch_size])})[0]
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit per image."""
        return self.scores(images).argmax(1)


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring run did: counts, speed, and where everything went."""

    input: str
    output: str
    rejects_file: str
    scored: int
    rejected: int
    seconds: float
    model: dict
    accuracy: float | None = None  # only when the input carries labels

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


def score_file(scorer: OnnxScorer, input_path: Path, output: Path, model: dict, probabilities: bool = False,
               progress: Callable[[int], None] | None = None, chunk_rows: int = READ_ROWS) -> ScoreReport:
    """Score `input_path` chunk by chunk into `output` (CSV `ImageId,Label` or Parquet), plus rejects and a JSON sidecar.

    Every file is written under a temporary name and renamed at the end: a failure leaves no partial output.
    """
    start = time.perf_counter()
    rejects_path = output.with_name(output.name + ".rejects.csv")
    scored = correct = labelled = 0
    all_rejects: list[tuple[int, str]] = []
    with _AtomicTableWriter(output, _output_schema(probabilities)) as writer:
        for chunk in stream_chunks(input_path, chunk_rows):
            scores = scorer.scores(chunk.images)
            predicted = scores.argmax(1)
            writer.write(_output_table(chunk.rows, predicted, scores if probabilities else None))
            all_rejects += chunk.rejects
            scored += len(chunk.rows)
            if chunk.labels is not None:
                labelled += len(chunk.labels)
                correct += int(np.sum(predicted == chunk.labels))
            if progress:
                progress(len(chunk.rows) + len(chunk.rejects))
        with _AtomicTableWriter(rejects_path, REJECTS_SCHEMA) as reject_writer:
            reject_writer.write(pa.table({"row": [r for r, _ in all_rejects], "reason": [w for _, w in all_rejects]},
                                         schema=REJECTS_SCHEMA))
    report = ScoreReport(str(input_path), str(output), str(rejects_path), scored, len(all_rejects),
                         time.perf_counter() - start, model, correct / labelled if labelled else None)
    _write_sidecar(output, report)
    return report


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
    payload = {**asdict(report), "reject_fraction": report.reject_fraction, "rows_per_second": report.rows_per_second}
    tmp = output.with_name(output.name + ".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, output.with_name(output.name + ".json"))


class _AtomicTableWriter:
    """Streams pyarrow tables to CSV or Parquet (by suffix) under a temporary name; renames on success only."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.tmp, self.schema = path, path.with_name(path.name + ".tmp"), schema

    def __enter__(self) -> _AtomicTableWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".parquet":
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
            return self
        self.sink = self.tmp.open("wb")
        self.sink.write((",".join(self.schema.names) + "\n").encode())  # pyarrow would quote the header names
        options = pacsv.WriteOptions(include_header=False)
        self.writer = pacsv.CSVWriter(self.sink, self.schema, write_options=options)
        return self

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table.cast(self.schema))

    def __exit__(self, exc_type, *_) -> None:
        self.writer.close()
        if self.path.suffix != ".parquet":
            self.sink.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
