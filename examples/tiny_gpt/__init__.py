"""A tiny GPT and a download-free byte-level corpus, for trying lightning-scaling end to end on a CPU.

`TinyGPT` is a small pre-LN decoder-only transformer with muP switches (``attn_scale="inverse"``,
``readout="mup"``); `ByteCorpusDataModule` serves byte windows of the Python standard library's own
source (or the user's text files) with a deterministic file-level train/validation split and
reproducible, resumable training batches. `WidthFamily` sizes the family by its width (a plugin the sweep registers).
"""

from .data import (
    ByteCorpusDataModule,
    CorpusFile,
    FixedWindowDataset,
    RandomWindowDataset,
    ResumableWindowLoader,
    WindowSampler,
    is_validation_file,
    resolve_paths,
    stdlib_source_files,
)
from .model import ATTN_SCALES, READOUTS, TinyGPT
from .widths import WidthFamily, propose_width

__all__ = [
    "ATTN_SCALES",
    "READOUTS",
    "ByteCorpusDataModule",
    "CorpusFile",
    "FixedWindowDataset",
    "RandomWindowDataset",
    "ResumableWindowLoader",
    "TinyGPT",
    "WidthFamily",
    "WindowSampler",
    "is_validation_file",
    "propose_width",
    "resolve_paths",
    "stdlib_source_files",
]
