"""Prefect flows: the pipeline diagram, top to bottom."""
