"""The ground floor: the typed records that travel between the library's modules (specs and search spaces,
training results, evidence and verdicts, model references and version rows, drift checks, labelled feedback).
They import nothing of the library above them, so the rest imports these instead of each other."""
