"""Tests of the example model and data module in ``examples/tiny_gpt``.

Notes on ``mup.MuReadout`` (mup 1.0.0, ``mup/layer.py`` and ``mup/shape.py``):

* ``MuReadout`` is an ``nn.Linear`` whose ``forward`` computes ``linear(output_mult * x / width_mult())``;
  ``width_mult()`` asserts that ``weight.infshape`` exists ("Please call set_base_shapes(...)"), so a model
  with a muP readout cannot run forward until :func:`mup.set_base_shapes` has been called on it.
* ``set_base_shapes(model, None)`` uses the model itself as base: every dimension equals its base
  dimension and is therefore "finite", ``width_mult() == 1`` and the readout acts as a plain linear layer.
  With a narrower base model (and a ``delta`` model to tell which dimensions are widths) the readout's
  ``width_mult()`` is ``d_model / base_d_model``.
* With ``rescale_params=True`` (the default) ``set_base_shapes`` multiplies the readout weights by
  ``sqrt(width_mult())`` once (and raises if called twice without ``rescale_params=False``).
* ``readout_zero_init=True`` makes ``MuReadout.reset_parameters`` zero the weights; ``TinyGPT`` passes
  ``zero_readout`` through to it and otherwise leaves ``MuReadout``'s own (``nn.Linear``) init alone.

Training tests run single-threaded: for models this small, intra-op threads only add synchronisation
overhead (and collapse when the machine is busy).
"""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import mup
import numpy as np
import pytest
import torch
from torch import nn

from examples.tiny_gpt import (
    ByteCorpusDataModule,
    RandomWindowDataset,
    ResumableWindowLoader,
    TinyGPT,
    WindowSampler,
    is_validation_file,
)

MAX_BYTES = 2_000_000


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stdlib_dm():
    dm = ByteCorpusDataModule(max_bytes=MAX_BYTES, seq_len=64, batch_size=8)
    dm.setup()
    return dm


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


# ---------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(d_model=32, n_layer=1, n_head=2, seq_len=16),
        dict(d_model=96, n_layer=3, n_head=3, vocab_size=100, seq_len=40, readout="mup"),
    ],
)
def test_count_params_matches_module(kw):
    model = TinyGPT(**kw)
    hp = model.hparams
    args = (hp.d_model, hp.n_layer, hp.vocab_size, hp.seq_len)
    assert TinyGPT.count_params(*args) == sum(p.numel() for p in model.parameters())
    assert TinyGPT.count_params(*args, include_embeddings=False) == model.non_embedding_params
    assert model.non_embedding_params == sum(p.numel() for p in model.parameters()) - (
        hp.vocab_size + hp.seq_len
    ) * hp.d_model


def test_flop_attributes_and_hparams():
    model = TinyGPT(d_model=48, n_layer=3, n_head=4, seq_len=32, lr=3e-3)
    assert (model.n_layer, model.n_ctx, model.d_model) == (3, 32, 48)
    assert model.hparams.lr == 3e-3 and model.hparams.attn_scale == "inverse_sqrt"
    assert tuple(model.hparams.betas) == (0.9, 0.95)


def test_forward_shape_and_too_long_input():
    model = TinyGPT(d_model=32, n_layer=1, n_head=2, seq_len=16)
    assert model(torch.randint(0, 256, (3, 16))).shape == (3, 16, 256)
    assert model(torch.randint(0, 256, (2, 5))).shape == (2, 5, 256)
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.randint(0, 256, (1, 17)))


def test_init_follows_init_std_and_zero_readout():
    model = TinyGPT(d_model=64, init_std=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)
    assert torch.all(TinyGPT(zero_readout=True).lm_head.weight == 0)


def test_attn_scale_options_change_logits():
    x = torch.randint(0, 256, (2, 32))
    logits = {}
    for scale in ("inverse_sqrt", "inverse"):
        torch.manual_seed(0)
        model = TinyGPT(d_model=64, n_head=4, seq_len=32, attn_scale=scale, init_std=0.3)
        logits[scale] = model(x)
    assert model.blocks[0].attn.scale == pytest.approx(1 / 16)  # d_head = 16
    assert not torch.allclose(logits["inverse_sqrt"], logits["inverse"], atol=1e-4)


def test_invalid_attn_scale_names_argument_and_allowed_values():
    with pytest.raises(ValueError) as info:
        TinyGPT(attn_scale="sqrt")
    message = str(info.value)
    assert "attn_scale" in message and "'sqrt'" in message
    assert "inverse_sqrt" in message and "'inverse'" in message


@pytest.mark.parametrize(
    "kw, name",
    [(dict(readout="tied"), "readout"), (dict(d_model=30, n_head=4), "n_head"), (dict(n_layer=0), "n_layer")],
)
def test_invalid_model_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        TinyGPT(**kw)


def test_mup_readout_requires_base_shapes_and_scales_by_width():
    model = TinyGPT(d_model=64, n_head=4, seq_len=16, readout="mup")
    assert isinstance(model.lm_head, mup.MuReadout)
    # MuReadout keeps its own nn.Linear init (uniform, bound 1/sqrt(64)), not normal(0, init_std).
    assert model.lm_head.weight.abs().max().item() <= 1 / 8 and model.lm_head.weight.std().item() > 0.05
    x = torch.randint(0, 256, (2, 16))
    with pytest.raises(AssertionError, match="set_base_shapes"):
        model(x)

    # Base = the model itself: all dimensions finite, width_mult() == 1, a plain linear readout.
    mup.set_base_shapes(model, None)
    assert model.lm_head.width_mult() == 1
    h = torch.randn(5, 64)
    torch.testing.assert_close(model.lm_head(h), h @ model.lm_head.weight.T)
    assert model(x).shape == (2, 16, 256)

    # A base half as wide: width_mult() == 2 and the readout divides its input by it.
    wide = TinyGPT(d_model=64, n_head=4, seq_len=16, readout="mup")
    base = TinyGPT(d_model=32, n_head=4, seq_len=16, readout="mup")
    delta = TinyGPT(d_model=48, n_head=4, seq_len=16, readout="mup")
    mup.set_base_shapes(wide, base, delta=delta)
    assert wide.lm_head.width_mult() == 2
    torch.testing.assert_close(wide.lm_head(h), (h / 2) @ wide.lm_head.weight.T)


def test_mup_zero_readout_gives_zero_logits():
    model = TinyGPT(d_model=32, n_head=2, seq_len=8, readout="mup", zero_readout=True)
    mup.set_base_shapes(model, None)
    assert torch.all(model(torch.randint(0, 256, (1, 8))) == 0)


def test_optimizer_groups_decay_only_linear_weights():
    model = TinyGPT(d_model=32, n_layer=2, n_head=2, seq_len=16, weight_decay=0.1, lr=2e-3)
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    linear_weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert {id(p) for p in decay["params"]} == {id(p) for p in linear_weights}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert id(model.tok_emb.weight) in {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["lr"] == 2e-3 and opt.defaults["betas"] == (0.9, 0.95)


# ---------------------------------------------------------------------------------------------- data
def test_stdlib_split_is_deterministic_and_disjoint(stdlib_dm):
    dm = stdlib_dm
    assert dm.train_data.dtype == np.uint8
    assert dm.train_data.size + dm.val_data.size == MAX_BYTES
    train_keys = [f.key for f in dm.train_files]
    val_keys = [f.key for f in dm.val_files]
    assert val_keys and train_keys and not set(train_keys) & set(val_keys)
    assert all(k.endswith(".py") for k in train_keys + val_keys)
    assert all(is_validation_file(k, 0.05) for k in val_keys)
    assert not any(is_validation_file(k, 0.05) for k in train_keys)
    again = ByteCorpusDataModule(max_bytes=MAX_BYTES, seq_len=64, batch_size=8)
    again.setup()
    assert [f.key for f in again.val_files] == val_keys
    assert np.array_equal(again.train_data, dm.train_data) and np.array_equal(again.val_data, dm.val_data)


def test_batches_shape_dtype_and_shift(stdlib_dm):
    x, y = next(iter(stdlib_dm.train_dataloader()))
    assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.min()) >= 0 and int(x.max()) < 256
    val_batches = list(stdlib_dm.val_dataloader())
    assert sum(len(b[0]) for b in val_batches) == 64  # the default val_windows
    assert val_batches[0][0].shape == (8, 64)


def test_same_seed_same_batches(stdlib_dm):
    other = ByteCorpusDataModule(max_bytes=MAX_BYTES, seq_len=64, batch_size=8)
    other.setup()
    for (a, _), (b, _), _ in zip(stdlib_dm.train_dataloader(), other.train_dataloader(), range(4)):
        assert torch.equal(a, b)
    for (a, _), (b, _) in zip(stdlib_dm.val_dataloader(), other.val_dataloader()):
        assert torch.equal(a, b)
    reseeded = ByteCorpusDataModule(max_bytes=MAX_BYTES, seq_len=64, batch_size=8, seed=1)
    assert not torch.equal(next(iter(reseeded.train_dataloader()))[0], next(iter(other.train_dataloader()))[0])


def test_loader_state_dict_resumes_mid_epoch(stdlib_dm):
    dataset = RandomWindowDataset(stdlib_dm.train_data, seq_len=16, num_windows=100, seed=3)
    full = [x for x, _ in ResumableWindowLoader(dataset, batch_size=4)]
    assert len(full) == 25
    loader = ResumableWindowLoader(dataset, batch_size=4)
    it = iter(loader)
    for _ in range(7):
        next(it)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 7}
    resumed = ResumableWindowLoader(dataset, batch_size=4)
    resumed.load_state_dict(state)
    rest = [x for x, _ in resumed]
    assert len(rest) == 18 and all(torch.equal(a, b) for a, b in zip(rest, full[7:]))
    # The resume point applies once; a new epoch gets new windows.
    resumed.sampler.set_epoch(1)
    epoch1 = [x for x, _ in resumed]
    assert len(epoch1) == 25 and not torch.equal(epoch1[0], full[0])


def test_window_sampler_shards_by_rank():
    shards = [list(WindowSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(i for s in shards for _, i in s) == list(range(10))


def test_user_files_directories_and_globs(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400))
    (tmp_path / "a.txt").write_text(text)
    sub = tmp_path / "more"
    sub.mkdir()
    for name in ("b.txt", "c.txt", "d.md"):
        (sub / name).write_text(text.upper())
    (sub / ".hidden").write_text("skipped")

    one = ByteCorpusDataModule(paths=[str(tmp_path / "a.txt")], seq_len=32, batch_size=4, val_windows=8)
    one.setup()  # a single file cannot be split by file: the stream is cut instead
    assert one.train_data.size + one.val_data.size == len(text)
    assert one.val_data.size == round(0.05 * len(text))
    assert bytes(one.train_data[:6]) == b"line 0"
    x, y = next(iter(one.train_dataloader()))
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])

    directory = ByteCorpusDataModule(paths=[str(sub)], seq_len=32, val_fraction=0.5)
    assert [f.key for f in directory.files] == ["b.txt", "c.txt", "d.md"]
    globbed = ByteCorpusDataModule(paths=[str(tmp_path / "**" / "*.txt")], seq_len=32)
    assert sorted(f.key.rsplit("/", 1)[-1] for f in globbed.files) == ["a.txt", "b.txt", "c.txt"]

    capped = ByteCorpusDataModule(paths=[str(sub)], seq_len=32, max_bytes=len(text) + 100)
    capped.setup()
    assert capped.train_data.size + capped.val_data.size == len(text) + 100


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="paths"):
        ByteCorpusDataModule(paths=[str(tmp_path / "missing*.txt")])
    with pytest.raises(ValueError, match="paths"):
        ByteCorpusDataModule(paths=[])
    short = tmp_path / "short.txt"
    short.write_text("too short")
    dm = ByteCorpusDataModule(paths=[str(short)], seq_len=64)
    with pytest.raises(ValueError, match="seq_len=64"):
        dm.setup()
    for kw, name in [
        (dict(val_fraction=0.0), "val_fraction"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(batch_size=0), "batch_size"),
        (dict(seq_len=0), "seq_len"),
        (dict(max_bytes=0), "max_bytes"),
        (dict(val_windows=0), "val_windows"),
        (dict(num_windows=4, batch_size=8), "num_windows"),
    ]:
        with pytest.raises(ValueError, match=name):
            ByteCorpusDataModule(paths=[str(short)], **kw)


# ---------------------------------------------------------------------------------------------- training
class _Record(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.inputs: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inputs[trainer.global_step] = batch[0].clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_short_fit_lowers_training_loss(stdlib_dm):
    pl.seed_everything(0, verbose=False)
    model = TinyGPT(d_model=32, n_layer=1, n_head=2, seq_len=64, lr=3e-3)
    record = _Record()
    trainer = _trainer(max_steps=20, limit_val_batches=2, callbacks=[record])
    trainer.fit(model, stdlib_dm)
    assert trainer.global_step == 20 and len(record.losses) == 20
    first, last = np.mean(record.losses[:3]), np.mean(record.losses[-3:])
    assert first == pytest.approx(math.log(256), abs=0.3)  # near-uniform predictions at init
    assert last < first - 0.5, record.losses
    assert "train_loss" in trainer.callback_metrics


def test_resume_mid_epoch_sees_the_same_batches(tmp_path, stdlib_dm):
    def run(max_steps, ckpt_path=None, save=False):
        pl.seed_everything(0, verbose=False)
        model = TinyGPT(d_model=32, n_layer=1, n_head=2, seq_len=64, lr=3e-3)
        record = _Record()
        callbacks = [record]
        if save:
            callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1))
        trainer = _trainer(max_steps=max_steps, limit_val_batches=0, enable_checkpointing=save, callbacks=callbacks)
        trainer.fit(model, stdlib_dm, ckpt_path=ckpt_path)
        return model, record

    full_model, full = run(6, save=True)
    ckpt = tmp_path / "epoch=0-step=3.ckpt"
    assert ckpt.exists()
    resumed_model, resumed = run(6, ckpt_path=str(ckpt))
    assert sorted(resumed.inputs) == [3, 4, 5]
    for step in (3, 4, 5):
        assert torch.equal(resumed.inputs[step], full.inputs[step])
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b)
