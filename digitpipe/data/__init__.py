"""Reading, splitting and describing digit datasets."""

from digitpipe.data.dataset import Dataset
from digitpipe.data.readers import load_dataset
from digitpipe.data.split import Split, SplitRecipe, split_by_protocol, split_dataset, split_standard

__all__ = ["Dataset", "Split", "SplitRecipe", "load_dataset", "split_by_protocol", "split_dataset", "split_standard"]
