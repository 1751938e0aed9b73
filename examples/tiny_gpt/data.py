"""Byte-level language-modelling data with no download: the Python standard library's own source.

Design
------
* **Corpus.** By default the corpus is every ``.py`` file of the running interpreter's standard library
  (``sysconfig.get_paths()["stdlib"]``, recursively, ``site-packages``/``dist-packages`` skipped, test
  suites included): roughly 30 MB of real, varied text on any CPython install, read in sorted
  relative-path order. The exact content depends on the Python version, so compare runs made with the same
  interpreter. ``paths`` replaces it with the user's own files, directories (all non-hidden files below
  them, sorted) or glob patterns. Text is read as raw bytes, so the vocabulary is 256.
* **Caps.** ``max_bytes`` caps the number of bytes read, taking files in their deterministic order and
  truncating the last one: quick tests read the same prefix of the corpus every time.
* **Split.** Train and validation are split by *file*: a file goes to validation when the first 8 bytes of
  ``sha256(key)`` (``key`` = its path relative to the corpus root, or to the directory argument it was
  found under) read as a fraction in ``[0, 1)`` fall below ``val_fraction``. The split is stable across
  machines and processes (no ``hash()`` randomisation) and a file never lands on both sides. If the file
  split leaves one side empty (e.g. a single user file), the concatenated stream is cut instead: its last
  ``val_fraction`` of bytes is validation.
* **Training windows.** Item ``i`` of epoch ``e`` is the window of ``seq_len + 1`` bytes starting at
  ``splitmix64(seed, e, i) mod (n - seq_len)``: a counter-based hash, so any item can be produced without
  state, identically in every worker and process. :class:`ResumableWindowLoader` walks items in order
  (no shuffling needed: the hash already randomises), so batch ``k`` of a run is always the same data.
  The loader implements ``state_dict``/``load_state_dict``, which Lightning saves with a checkpoint and
  restores on resume: a run resumed from a mid-epoch checkpoint continues with exactly the batches the
  uninterrupted run would have seen (a plain DataLoader would restart the epoch from its first batch).
  Lightning's ``set_epoch`` gives each epoch fresh windows.
* **Validation windows.** A fixed set of ``val_windows`` windows at evenly spaced offsets of the
  validation stream: the same every run, so ``val_loss`` is comparable across runs and model sizes.
* **Multiple devices.** Rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, ...``. Pass
  ``use_distributed_sampler=False`` to the Trainer so Lightning keeps this loader's sampler. Every rank
  evaluates all validation windows (the set is small and identical everywhere).
* **Empty files** contribute nothing and are left out of ``train_files``/``val_files``.

Batches are ``(input_ids, targets)`` pairs of ``int64`` tensors of shape ``(batch_size, seq_len)`` with
``targets`` shifted one byte to the left of ``input_ids``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "ByteCorpusDataModule",
    "CorpusFile",
    "FixedWindowDataset",
    "RandomWindowDataset",
    "ResumableWindowLoader",
    "WindowSampler",
    "is_validation_file",
    "resolve_paths",
    "stdlib_source_files",
]

_MASK64 = (1 << 64) - 1
_EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


# ---------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus: where it is and the stable key used for the train/validation split."""

    path: str
    key: str


def stdlib_source_files() -> list[CorpusFile]:
    """The ``.py`` files of the running interpreter's standard library, sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[CorpusFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_STDLIB_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                if path.is_file():
                    files.append(CorpusFile(str(path), path.relative_to(root).as_posix()))
    return sorted(files, key=lambda f: f.key)


def _directory_files(root: Path) -> list[CorpusFile]:
    files: list[CorpusFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file():
                files.append(CorpusFile(str(path), path.relative_to(root).as_posix()))
    return sorted(files, key=lambda f: f.key)


def resolve_paths(paths: Sequence[str | os.PathLike]) -> list[CorpusFile]:
    """Expand files, directories and glob patterns into a deterministic list of files.

    Arguments are taken in the given order; a directory contributes all its non-hidden files (recursively,
    sorted by relative path, key = that relative path); a glob pattern contributes its matching files
    (sorted, key = the matched path); a file is its own key. A file reached twice is kept once.

    Raises:
        ValueError: naming ``paths`` when an entry matches no file.
    """
    out: list[CorpusFile] = []
    seen: set[str] = set()
    for entry in paths:
        text = os.fspath(entry)
        p = Path(text).expanduser()
        if p.is_dir():
            found = _directory_files(p)
        elif p.is_file():
            found = [CorpusFile(str(p), p.as_posix())]
        else:
            matches = sorted(glob.glob(str(p), recursive=True))
            found = [CorpusFile(m, Path(m).as_posix()) for m in matches if Path(m).is_file()]
        if not found:
            raise ValueError(f"paths: {text!r} matches no file (expected a file, a directory or a glob pattern)")
        for f in found:
            real = os.path.realpath(f.path)
            if real not in seen:
                seen.add(real)
                out.append(f)
    return out


def is_validation_file(key: str, val_fraction: float) -> bool:
    """Whether the file with this key belongs to validation: ``sha256(key)`` as a fraction < ``val_fraction``."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def _read_files(files: Sequence[CorpusFile], max_bytes: int | None) -> tuple[list[bytes], list[CorpusFile]]:
    """Read files in order, stopping once ``max_bytes`` bytes are read (the last file is truncated)."""
    chunks: list[bytes] = []
    used: list[CorpusFile] = []
    total = 0
    for f in files:
        budget = -1 if max_bytes is None else max_bytes - total
        if budget == 0:
            break
        with open(f.path, "rb") as fh:
            data = fh.read(budget)
        if data:
            chunks.append(data)
            used.append(f)
            total += len(data)
    return chunks, used


# ---------------------------------------------------------------------------------------------- windows
def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer (Steele, Lea and Flood 2014): a fast, well-distributed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _window(data: np.ndarray, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    chunk = torch.from_numpy(data[start : start + length + 1].astype(np.int64))
    return chunk[:-1], chunk[1:]


class RandomWindowDataset(Dataset):
    """Training windows: item ``i`` (or ``(epoch, i)``) is a pseudo-random window of ``seq_len + 1`` bytes.

    The window start is ``splitmix64(seed, epoch, i) mod (len(data) - seq_len)``, a pure function of the
    key, so the dataset has no state and every worker/process computes the same windows. An integer key
    means epoch 0. ``len()`` is ``num_windows``, the number of items per epoch.
    """

    def __init__(self, data: np.ndarray, seq_len: int, num_windows: int, seed: int = 0) -> None:
        if len(data) < seq_len + 1:
            raise ValueError(f"seq_len={seq_len} needs at least {seq_len + 1} bytes, got {len(data)}")
        self.data = data
        self.seq_len = seq_len
        self.num_windows = num_windows
        self.seed = seed
        self.num_starts = len(data) - seq_len
        self._seed_hash = _splitmix64(seed & _MASK64)

    def __len__(self) -> int:
        return self.num_windows

    def start(self, epoch: int, index: int) -> int:
        """Start offset of item ``index`` of epoch ``epoch``."""
        h = _splitmix64(self._seed_hash ^ (epoch & _MASK64))
        h = _splitmix64(h ^ (index & _MASK64))
        return h % self.num_starts

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return _window(self.data, self.start(int(epoch), int(index)), self.seq_len)


class FixedWindowDataset(Dataset):
    """Validation windows: ``num_windows`` windows at evenly spaced offsets covering the whole stream."""

    def __init__(self, data: np.ndarray, seq_len: int, num_windows: int) -> None:
        if len(data) < seq_len + 1:
            raise ValueError(f"seq_len={seq_len} needs at least {seq_len + 1} bytes, got {len(data)}")
        self.data = data
        self.seq_len = seq_len
        last = len(data) - seq_len - 1
        self.starts = np.linspace(0, last, num=num_windows).round().astype(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _window(self.data, int(self.starts[index]), self.seq_len)


class WindowSampler(Sampler):
    """Yields the keys ``(epoch, i)`` of one epoch in order; this rank's share, from a resume point on.

    Rank ``r`` of ``world_size`` takes ``i = r, r + w, ...``; ``len()`` is the per-rank count for a whole
    epoch. ``set_epoch`` (called by Lightning at each epoch start) selects the epoch; ``skip`` items are
    left out of the next iteration only (the resume point set by :class:`ResumableWindowLoader`).
    """

    def __init__(self, num_windows: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.num_windows = num_windows
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (self.num_windows - self.rank + self.world_size - 1) // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        epoch = self.epoch
        for k in range(skip, len(self)):
            yield epoch, k * self.world_size + self.rank


class ResumableWindowLoader(DataLoader):
    """A DataLoader over :class:`RandomWindowDataset` that can resume mid-epoch.

    It counts the batches it has handed out in the current epoch; Lightning stores that count (via
    ``state_dict``) in each checkpoint and gives it back (via ``load_state_dict``) on resume, and the next
    epoch then starts after the batches already consumed. Batches always have exactly ``batch_size``
    windows (the incomplete last batch of an epoch is dropped).
    """

    def __init__(
        self,
        dataset: RandomWindowDataset,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        sampler = WindowSampler(len(dataset), rank=rank, world_size=world_size)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
        )
        self._batches_done = 0

    def __iter__(self) -> Iterator[Any]:
        sampler: WindowSampler = self.sampler  # type: ignore[assignment]
        self._batches_done = sampler.skip // self.batch_size
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        done = int(state_dict.get("batches_done", 0))
        self.sampler.set_epoch(int(state_dict.get("epoch", 0)))
        # A checkpoint taken after the last batch of an epoch resumes at the start of the next one.
        self.sampler.skip = done * self.batch_size if done < len(self) else 0
        self._batches_done = done if done < len(self) else 0


# ---------------------------------------------------------------------------------------------- data module
class ByteCorpusDataModule(pl.LightningDataModule):
    """Byte-level language-modelling data from the standard library's source or the user's own files.

    Args:
        paths: files, directories or glob patterns of the user's text; ``None`` (default) uses the ``.py``
            files of the standard library.
        seq_len: tokens (bytes) per training example; windows are ``seq_len + 1`` bytes.
        batch_size: windows per batch, for training and validation.
        val_fraction: the fraction of files (by stable hash of their key) held out for validation.
        max_bytes: read at most this many bytes in total (files in their deterministic order); ``None`` reads
            everything.
        val_windows: number of fixed validation windows, evenly spaced over the validation stream.
        num_windows: training items per epoch (per epoch, before splitting across ranks).
        seed: seed of the training windows.
        num_workers: DataLoader worker processes.

    The corpus is read in :meth:`setup` (once) into ``numpy.uint8`` arrays ``train_data`` and ``val_data``;
    ``train_files``/``val_files`` list the :class:`CorpusFile` on each side.
    """

    def __init__(  # noqa: PLR0913  # the keyword arguments are the data module's YAML keys, flat for LightningCLI
        self,
        paths: list[str] | None = None,
        seq_len: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        max_bytes: int | None = None,
        val_windows: int = 64,
        num_windows: int = 1_000_000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(paths, (str, os.PathLike)):
            paths = [os.fspath(paths)]
        for name, value, low in (("seq_len", seq_len, 1), ("batch_size", batch_size, 1),
                                 ("val_windows", val_windows, 1), ("num_windows", num_windows, 1),
                                 ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        if num_windows < batch_size:
            raise ValueError(f"num_windows ({num_windows}) must be at least batch_size ({batch_size})")
        if paths is not None and len(paths) == 0:
            raise ValueError("paths must be None (the standard-library corpus) or a non-empty list")
        self.save_hyperparameters()
        self.paths = None if paths is None else [os.fspath(p) for p in paths]
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.max_bytes = max_bytes
        self.val_windows = val_windows
        self.num_windows = num_windows
        self.seed = seed
        self.num_workers = num_workers
        # Resolve the file list now, so a bad `paths` fails at construction.
        self.files: list[CorpusFile] = stdlib_source_files() if self.paths is None else resolve_paths(self.paths)
        if not self.files:
            raise ValueError("paths: the standard library has no .py files to read")
        self.train_data: np.ndarray | None = None
        self.val_data: np.ndarray | None = None
        self.train_files: list[CorpusFile] = []
        self.val_files: list[CorpusFile] = []

    @property
    def tokens_per_batch(self) -> int:
        """Training tokens per batch (per device): ``batch_size * seq_len``."""
        return self.batch_size * self.seq_len

    def setup(self, stage: str | None = None) -> None:
        """Read and split the corpus (only the first call does work)."""
        if self.train_data is not None:
            return
        chunks, used = _read_files(self.files, self.max_bytes)
        is_val = [is_validation_file(f.key, self.val_fraction) for f in used]
        if any(is_val) and not all(is_val):
            self.train_files = [f for f, v in zip(used, is_val) if not v]
            self.val_files = [f for f, v in zip(used, is_val) if v]
            train = b"".join(c for c, v in zip(chunks, is_val) if not v)
            val = b"".join(c for c, v in zip(chunks, is_val) if v)
        else:  # one side would be empty: cut the stream instead
            stream = b"".join(chunks)
            cut = len(stream) - int(round(len(stream) * self.val_fraction))
            train, val = stream[:cut], stream[cut:]
            self.train_files, self.val_files = list(used), list(used)
        where = f"paths={self.paths!r}, max_bytes={self.max_bytes!r}"
        for split, data in (("training", train), ("validation", val)):
            if len(data) < self.seq_len + 1:
                raise ValueError(
                    f"seq_len={self.seq_len} needs at least {self.seq_len + 1} bytes of {split} text, but the "
                    f"{split} split has {len(data)} ({where}); use more text or a smaller seq_len"
                )
        self.train_data = np.frombuffer(train, dtype=np.uint8)
        self.val_data = np.frombuffer(val, dtype=np.uint8)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> ResumableWindowLoader:
        self.setup()
        rank, world = self._rank_and_world()
        dataset = RandomWindowDataset(self.train_data, self.seq_len, self.num_windows, seed=self.seed)
        return ResumableWindowLoader(
            dataset, self.batch_size, rank=rank, world_size=world, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        dataset = FixedWindowDataset(self.val_data, self.seq_len, self.val_windows)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
