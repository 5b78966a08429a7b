"""Prefect task wrappers: a few lines each, calling digitpipe functions."""
