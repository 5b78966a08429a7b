"""The ground floor: the typed records that travel between the library's modules (specs and search spaces,
training results, evidence and verdicts, model references and version rows, drift checks, labelled feedback).
They import only the library's plain helpers (errors, files, runtime, the Dataset type), never a step, so the
rest imports these instead of each other."""
