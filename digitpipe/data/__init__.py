"""Reading, splitting and describing digit datasets."""

from digitpipe.data.dataset import Dataset
from digitpipe.data.reader import load_dataset, read_chunks, read_whole
from digitpipe.data.split import Split, SplitRecipe, split_by_protocol, split_dataset, split_standard

__all__ = ["Dataset", "Split", "SplitRecipe", "load_dataset", "read_chunks", "read_whole", "split_by_protocol",
           "split_dataset", "split_standard"]
