"""The plugin system: built-in proposals and law forms, ordering, entry points, misspelt hooks, broken sinks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_scaling import ChinchillaFit, ConfigurationError, plugins
from lightning_scaling.plugins import (
    PluginWarning,
    check_plugins,
    estimate_flops,
    gpt_non_embedding_params,
    gpt_shape_for,
    hookimpl,
    law_forms,
    notify_recommendation,
    plugin_manager,
    propose_architecture,
    reset_plugin_manager,
)
from lightning_scaling.plugins import builtin as builtin_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN_DIR = ROOT / "examples" / "plugin"
EXAMPLE_MODULE = "lightning_scaling_example_plugin"
#: The example GPT's defaults (examples/tiny_gpt/model.py).
GPT_HPARAMS = {"d_model": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256, "seq_len": 128, "lr": 1e-3}


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch):
    """Each test builds its own manager, without the plugins installed in the environment, and drops it after."""
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def register():
    """Register plugin objects on the current manager for one test; unregistered afterwards."""
    registered = []

    def _register(plugin, name: str):
        plugin_manager().register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield _register
    for plugin in reversed(registered):
        if plugin_manager().is_registered(plugin):
            plugin_manager().unregister(plugin)


@pytest.fixture
def example_plugin(monkeypatch):
    """The example third-party plugin, imported from examples/plugin (as `pip install -e examples/plugin` would)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN_DIR))
    sys.modules.pop(EXAMPLE_MODULE, None)
    import lightning_scaling_example_plugin as module

    yield module
    sys.modules.pop(EXAMPLE_MODULE, None)


class Recorder:
    """A plugin that answers `propose_architecture` and records what `on_recommendation` receives."""

    def __init__(self, answer=None):
        self.answer = answer
        self.received = []

    @hookimpl
    def propose_architecture(self, params, hparams):
        return self.answer

    @hookimpl
    def on_recommendation(self, recommendation):
        self.received.append(recommendation)


# -- the built-in plugin ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [3e5, 1e6, 3172608, 1e7, 1e8, 1e9])
def test_builtin_proposal_is_near_N_and_keeps_d_head(N):
    shape = builtin_plugins.propose_architecture(params=N, hparams=GPT_HPARAMS)
    assert abs(shape["params"] / N - 1) <= builtin_plugins.SHAPE_RTOL
    assert shape["d_model"] // shape["n_head"] == 16 and shape["d_model"] % shape["n_head"] == 0
    assert shape["params"] == gpt_non_embedding_params(shape["d_model"], shape["n_layer"], 256)


def test_builtin_proposal_keeps_the_aspect_ratio_at_scale():
    shape = builtin_plugins.propose_architecture(params=1e8, hparams=GPT_HPARAMS)
    assert 0.8 <= (shape["d_model"] / shape["n_layer"]) / 32 <= 1.25


def test_builtin_proposal_stays_in_a_small_sweeps_family():
    # a sweep of 2-layer models (d_head 16, widths 32 to 64) asks for 38.3k parameters: no multiple of 16 at 2 layers
    # is within 5%, and a 10-layer d_model=16 model that is (3.6%) would leave the family the law was fitted on
    for hparams in ({"d_model": 48, "n_layer": 2, "n_head": 3}, {"d_model": 32, "n_layer": 2, "n_head": 2}):
        shape = builtin_plugins.propose_architecture(params=38.3e3, hparams=hparams)
        assert (shape["d_model"], shape["n_layer"], shape["n_head"]) == (32, 2, 2)
    assert gpt_shape_for(38.3e3, d_head=16, aspect=24, rtol=0.05)["n_layer"] == 10  # the stricter N tolerance


def test_builtin_proposal_prefers_n_within_the_aspect_band():
    # at scale the d_head grid is fine: several depths are near both N and the aspect; the nearest N wins
    shape = gpt_shape_for(3172608, d_head=16, aspect=32)
    assert abs(shape["params"] / 3172608 - 1) < 0.01
    assert 32 / 1.25 <= shape["d_model"] / shape["n_layer"] <= 32 * 1.25
    strict = gpt_shape_for(3172608, d_head=16, aspect=32, aspect_band=1.0)
    assert strict["d_model"] / strict["n_layer"] == pytest.approx(32.0, rel=0.1)


def test_builtin_count_is_tiny_gpts_real_non_embedding_count():
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from examples.tiny_gpt.model import TinyGPT

    shape = builtin_plugins.propose_architecture(params=3e5, hparams=GPT_HPARAMS)
    model = TinyGPT(vocab_size=256, seq_len=128, d_model=shape["d_model"], n_layer=shape["n_layer"],
                    n_head=shape["n_head"])
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    real = sum(p.numel() for p in model.parameters()) - embeddings
    assert shape["params"] == real == model.non_embedding_params
    for d_model, n_layer, vocab_size in [(48, 3, 256), (208, 6, 256), (64, 1, 1000)]:
        assert gpt_non_embedding_params(d_model, n_layer, vocab_size) == TinyGPT.count_params(
            d_model, n_layer, vocab_size, 128, include_embeddings=False)


def test_builtin_proposal_reads_string_hparams_and_ignores_other_models():
    as_strings = {key: str(value) for key, value in GPT_HPARAMS.items()}
    assert builtin_plugins.propose_architecture(params=1e7, hparams=as_strings) == \
        builtin_plugins.propose_architecture(params=1e7, hparams=GPT_HPARAMS)
    assert builtin_plugins.propose_architecture(params=1e7, hparams={"hidden": 64, "depth": 2}) is None
    assert propose_architecture(1e7, {"hidden": 64}) is None


def test_numpy_numbers_are_accepted():
    np = pytest.importorskip("numpy")
    as_numpy = {key: np.int64(value) for key, value in GPT_HPARAMS.items() if key != "lr"}
    assert propose_architecture(np.int64(3172608), as_numpy) == propose_architecture(3172608, GPT_HPARAMS)
    assert propose_architecture(np.float64(1e7), {**GPT_HPARAMS, "d_model": 64.0})["d_model"] % 16 == 0


def test_builtin_proposal_rejects_a_bad_hparam():
    with pytest.raises(ConfigurationError, match=r"`hparams\['n_layer'\]` must be an integer >= 1, got '2.5'"):
        builtin_plugins.propose_architecture(params=1e7, hparams={**GPT_HPARAMS, "n_layer": "2.5"})


def test_builtin_proposal_rejects_d_model_not_multiple_of_n_head():
    with pytest.raises(ConfigurationError, match=r"`hparams\['d_model'\]` must be a multiple of `hparams\['n_head'\]`"):
        builtin_plugins.propose_architecture(params=1e7, hparams={**GPT_HPARAMS, "n_head": 5})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"params": 0.0}, r"`params` must be a finite number > 0, got 0.0"),
        ({"d_head": 0}, r"`d_head` must be an integer >= 1, got 0"),
        ({"aspect": float("inf")}, r"`aspect` must be a finite number > 0, got inf"),
        ({"vocab_size": 2.0}, r"`vocab_size` must be an integer >= 1, got 2.0"),
        ({"max_layers": 0}, r"`max_layers` must be an integer >= 1, got 0"),
        ({"rtol": 1.0}, r"`rtol` must be in \[0, 1\), got 1.0"),
        ({"aspect_band": 0.5}, r"`aspect_band` must be a finite number >= 1, got 0.5"),
    ],
)
def test_gpt_shape_for_rejects_bad_arguments(kwargs, match):
    arguments = {"params": 1e6, "d_head": 16, "aspect": 32.0, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        gpt_shape_for(arguments.pop("params"), **arguments)


def test_manager_registers_builtin_and_checks():
    pm = plugin_manager()
    assert pm.get_plugin("builtin") is builtin_plugins
    assert pm is plugin_manager()  # process-wide
    check_plugins()
    assert propose_architecture(3172608, GPT_HPARAMS) == {"d_model": 192, "n_layer": 7, "n_head": 12,
                                                          "params": 3163584}


# -- ordering and sinks -------------------------------------------------------------------------------------------
def test_registered_plugin_wins_over_builtin_and_receives_recommendation(register):
    recorder = register(Recorder(answer={"d_model": 1, "n_layer": 1, "n_head": 1, "params": 1}), "recorder")
    assert propose_architecture(1e7, GPT_HPARAMS) == recorder.answer
    notify_recommendation({"params": 1e7, "tokens": 2e8})
    assert recorder.received == [{"params": 1e7, "tokens": 2e8}]


def test_plugin_returning_none_lets_builtin_answer(register):
    register(Recorder(answer=None), "silent")
    assert propose_architecture(1e7, GPT_HPARAMS) == builtin_plugins.propose_architecture(1e7, GPT_HPARAMS)


def test_propose_architecture_rejects_bad_params():
    with pytest.raises(ConfigurationError, match=r"`params` must be a finite number > 0, got nan"):
        propose_architecture(float("nan"), GPT_HPARAMS)


def test_propose_architecture_rejects_non_mapping_hparams():
    with pytest.raises(ConfigurationError, match=r"`hparams` must be a mapping of hyperparameters, got list"):
        propose_architecture(1e7, [("d_model", 64)])


def test_propose_architecture_rejects_a_non_dict_answer(register):
    register(Recorder(answer=[256, 4]), "listy")
    with pytest.raises(ConfigurationError, match=r"must return a dict or None, got list; implementations: .*listy"):
        propose_architecture(1e7, GPT_HPARAMS)


def test_estimate_flops_first_answer_wins_and_defaults_to_none(register):
    class Flops:
        def __init__(self, answer):
            self.answer = answer

        @hookimpl
        def estimate_flops(self, module, batch):
            return self.answer

    assert estimate_flops(object(), object()) is None  # no plugin answers: measure as usual
    register(Flops(123), "first")
    register(Flops(None), "later-silent")
    assert estimate_flops(object(), object()) == 123
    register(Flops(-1), "negative")
    with pytest.raises(ConfigurationError, match=r"must return a finite number >= 0 or None, got -1"):
        estimate_flops(object(), object())


def test_broken_sink_warns_and_the_others_still_run(register):
    class Broken:
        @hookimpl
        def on_recommendation(self, recommendation):
            raise RuntimeError("queue is down")

    recorder = register(Recorder(), "recorder")
    register(Broken(), "broken-sink")  # registered last: called first
    with pytest.warns(PluginWarning, match=r"plugin 'broken-sink' failed in `on_recommendation`.*queue is down"):
        notify_recommendation({"params": 1e7})
    assert recorder.received == [{"params": 1e7}]


def test_each_sink_gets_its_own_copy(register):
    class Mutator:
        @hookimpl
        def on_recommendation(self, recommendation):
            recommendation["params"] = -1

    recorder = register(Recorder(), "recorder")
    register(Mutator(), "mutator")
    notify_recommendation({"params": 1e7})
    assert recorder.received == [{"params": 1e7}]


# -- the example third-party plugin -------------------------------------------------------------------------------
def test_example_plugin_writes_one_json_line_per_recommendation(example_plugin, register, tmp_path, monkeypatch):
    sink = tmp_path / "recommendations.jsonl"
    monkeypatch.setenv(example_plugin.RECOMMENDATIONS_FILE_ENV, str(sink))
    register(example_plugin, "example-test")
    notify_recommendation({"params": 3e6, "tokens": 6e7, "sentence": "Train next a model of 3M parameters."})
    notify_recommendation({"params": 1e7, "tokens": 2e8})
    lines = sink.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"params": 3e6, "tokens": 6e7, "sentence": "Train next a model of 3M parameters."},
        {"params": 1e7, "tokens": 2e8},
    ]


def test_example_plugin_sink_does_nothing_when_unset(example_plugin, tmp_path, monkeypatch):
    monkeypatch.delenv(example_plugin.RECOMMENDATIONS_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    example_plugin.on_recommendation({"params": 1e7})
    assert list(tmp_path.iterdir()) == []


def test_example_plugin_proposes_deep_narrow_and_overrides_builtin(example_plugin, register):
    wide = {**GPT_HPARAMS, "d_model": 512, "n_layer": 2, "n_head": 8}  # aspect 256, d_head 64
    register(example_plugin, "example-test")
    shape = propose_architecture(1e8, wide)
    assert shape == example_plugin.propose_architecture(params=1e8, hparams=wide)
    assert shape["d_model"] // shape["n_head"] == 32 and 0.8 <= shape["d_model"] / shape["n_layer"] / 32 <= 1.25
    assert abs(shape["params"] / 1e8 - 1) <= 0.05
    builtin = builtin_plugins.propose_architecture(params=1e8, hparams=wide)
    assert builtin["d_model"] // builtin["n_head"] == 64 and builtin["n_layer"] < shape["n_layer"]
    assert propose_architecture(1e8, {"hidden": 64}) is None


# -- entry points and validation ----------------------------------------------------------------------------------
def make_distribution(site: Path, dist_name: str, module_name: str, source: str, entry_points: str | None = None):
    """An installed distribution under `site`: a module and a ``*.dist-info`` declaring its entry points."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module_name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{dist_name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1.0\n", encoding="utf-8")
    if entry_points is None:
        entry_points = f"[lightning_scaling]\n{dist_name} = {module_name}\n"
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A temporary site directory on sys.path with plugin autoloading on; its modules are forgotten afterwards."""
    import importlib

    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))  # also invalidates importlib's caches
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(root) in str(sys.modules[name].__file__):
            del sys.modules[name]
    importlib.invalidate_caches()


def test_entry_point_plugin_is_loaded(site):
    make_distribution(site, "ls-fake-plugin", "ls_fake_plugin", """
        from lightning_scaling.plugins.hookspecs import hookimpl

        @hookimpl
        def propose_architecture(params, hparams):
            return {"width": 7, "params": int(params)}
    """)
    reset_plugin_manager()
    pm = plugin_manager()
    assert pm.has_plugin("ls-fake-plugin")
    assert [name for name, _ in pm.list_name_plugin()][0] == "builtin"
    assert propose_architecture(1e6, GPT_HPARAMS) == {"width": 7, "params": 1000000}
    assert [dist.metadata["Name"] for _, dist in pm.list_plugin_distinfo()] == ["ls-fake-plugin"]


def test_example_plugin_entry_point_from_its_pyproject(site, tmp_path, monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((EXAMPLE_PLUGIN_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["entry-points"]["lightning_scaling"]
    assert declared == {"example": EXAMPLE_MODULE}
    source = (EXAMPLE_PLUGIN_DIR / f"{EXAMPLE_MODULE}.py").read_text(encoding="utf-8")
    entry_points = "[lightning_scaling]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items())
    make_distribution(site, project["name"], EXAMPLE_MODULE, source, entry_points)
    sink = tmp_path / "sink.jsonl"
    monkeypatch.setenv("LIGHTNING_SCALING_RECOMMENDATIONS_FILE", str(sink))
    sys.modules.pop(EXAMPLE_MODULE, None)
    reset_plugin_manager()
    assert plugin_manager().has_plugin("example")
    notify_recommendation({"params": 5e6})
    assert json.loads(sink.read_text(encoding="utf-8")) == {"params": 5e6}


def test_autoload_can_be_disabled(site, monkeypatch):
    make_distribution(site, "ls-fake-plugin", "ls_fake_plugin", "x = 1\n")
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    reset_plugin_manager()
    assert not plugin_manager().has_plugin("ls-fake-plugin")


def test_misspelt_hook_in_an_installed_plugin_is_an_error(site):
    make_distribution(site, "ls-typo-plugin", "ls_typo_plugin", """
        from lightning_scaling.plugins.hookspecs import hookimpl

        @hookimpl
        def propose_architectur(params, hparams):
            return None
    """)
    reset_plugin_manager()
    message = r"plugin 'ls-typo-plugin' implements unknown hook 'propose_architectur' \(did you mean 'propose_archi"
    with pytest.raises(ConfigurationError, match=message):
        plugin_manager()
    with pytest.raises(ConfigurationError, match=message):  # not cached half-built: the next call checks again
        plugin_manager()


def test_misspelt_hook_in_a_registered_plugin_fails_check(register):
    class Typo:
        @hookimpl
        def on_recomendation(self, recommendation):
            pass

    register(Typo(), "typo")
    with pytest.raises(ConfigurationError, match=r"plugin 'typo' implements unknown hook 'on_recomendation'"):
        check_plugins()


def test_hook_with_unknown_argument_names_the_plugin(site):
    make_distribution(site, "ls-args-plugin", "ls_args_plugin", """
        from lightning_scaling.plugins.hookspecs import hookimpl

        @hookimpl
        def estimate_flops(module, batch, tokens):
            return 0
    """)
    reset_plugin_manager()
    with pytest.raises(ConfigurationError, match=r"plugin 'ls_args_plugin' is not a valid lightning_scaling plugin"):
        plugin_manager()


# -- law forms ----------------------------------------------------------------------------------------------------
def test_law_forms_has_chinchilla():
    forms = law_forms()
    assert forms["chinchilla"] is ChinchillaFit
    assert isinstance(forms["chinchilla"](), ChinchillaFit)


def test_law_form_registered_twice_names_both_plugins(register):
    class Duplicate:
        @hookimpl
        def register_law_forms(self, register):
            register("chinchilla", ChinchillaFit)

    register(Duplicate(), "my-laws")
    with pytest.raises(ConfigurationError,
                       match=r"law form 'chinchilla' is registered twice: by plugin '(my-laws|builtin)' "
                             r"and by plugin '(builtin|my-laws)'"):
        law_forms()


def test_law_form_from_a_plugin(register):
    class Extra:
        @hookimpl
        def register_law_forms(self, register):
            register("kaplan", dict)

    register(Extra(), "extra")
    assert set(law_forms()) == {"chinchilla", "exponent_interaction", "data_constrained", "kaplan"}


@pytest.mark.parametrize(
    "name, factory, match",
    [
        ("", ChinchillaFit, r"plugin 'bad': a law form's `name` must be a non-empty string, got ''"),
        ("mine", 3, r"plugin 'bad': the `factory` of law form 'mine' must be callable, got 3"),
    ],
)
def test_law_form_registration_is_validated(register, name, factory, match):
    class Bad:
        @hookimpl
        def register_law_forms(self, register):
            register(name, factory)

    register(Bad(), "bad")
    with pytest.raises(ConfigurationError, match=match):
        law_forms()


# -- the boundary -------------------------------------------------------------------------------------------------
def test_plugins_work_with_frameworks_blocked():
    blocked = ("lightning", "pytorch_lightning", "lightning_fabric", "torch", "mlflow", "mup")
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import lightning_scaling.hookspecs, lightning_scaling.plugins.builtin
        from lightning_scaling import plugins
        plugins.plugin_manager()
        assert "chinchilla" in plugins.law_forms()
        assert plugins.propose_architecture(1e7, {{"d_model": 64, "n_layer": 2, "n_head": 4}})["params"] > 0
        plugins.notify_recommendation({{"params": 1e7}})
        loaded = sorted(n for n in sys.modules if n.split(".")[0] in {blocked!r})
        print("LOADED", loaded)
    """)
    env = {**os.environ, plugins.DISABLE_AUTOLOAD_ENV: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
