"""The book's helpers: sag.book (chapter modes, data, seeds, figures) and the sag_cache Sphinx extension."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import types
from pathlib import Path

import matplotlib
import pytest
import torch
import yaml

import sag.book
from sag.data import synthetic as synthetic_module

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_train_ids": 2, "num_test_ids": 2, "images_per_id": 2, "size": (32, 16)}


def _load_ext():
    """book/_ext/sag_cache.py as a module."""
    spec = importlib.util.spec_from_file_location("sag_cache", ROOT / "book" / "_ext" / "sag_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sag_cache = _load_ext()


# --- sag.book: modes ------------------------------------------------------------------------------------------


def test_choose_mode_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    empty = {"SAG_DATA_ROOT": str(tmp_path)}
    assert sag.book.choose_mode("market1501", {"SAG_BOOK_MODE": "cpu"}) == "cpu"
    assert sag.book.choose_mode("market1501", empty) == "cpu"  # auto, no GPU, no data
    with pytest.raises(ValueError, match="not a mode"):
        sag.book.choose_mode("market1501", {"SAG_BOOK_MODE": "fast"})
    with pytest.raises(FileNotFoundError, match="python -m sag download market1501"):
        sag.book.choose_mode("market1501", empty | {"SAG_BOOK_MODE": "full"})


def test_auto_mode_is_full_only_with_a_gpu_and_the_dataset(monkeypatch, tmp_path):
    monkeypatch.setattr(sag.book, "real_data_present", lambda dataset, environ=None: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sag.book.choose_mode("market1501", {}) == "full"
    assert sag.book.choose_mode("market1501", {"SAG_BOOK_MODE": "full"}) == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sag.book.choose_mode("market1501", {}) == "cpu"  # data alone is not enough
    monkeypatch.setattr(sag.book, "real_data_present", lambda dataset, environ=None: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sag.book.choose_mode("market1501", {}) == "gpu"  # a GPU alone: the Market-scale synthetic world
    assert sag.book.choose_mode("market1501", {"SAG_BOOK_MODE": "cpu"}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sag.book.choose_mode("market1501", {"SAG_BOOK_MODE": "gpu"}) == "gpu"  # forced


def _no_weights(backbone="resnet50"):
    return False, "URLError: offline"


def test_gpu_mode_uses_cuda_the_market_scale_world_and_imagenet_weights(monkeypatch, tmp_path, capsys):
    made = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sag.book, "real_data_present", lambda dataset, environ=None: False)
    monkeypatch.setattr(sag.book, "synthetic_root", lambda **world: made.append(world) or tmp_path)
    monkeypatch.setattr(sag.book, "imagenet_weights_available", lambda backbone="resnet50": (True, ""))
    monkeypatch.delenv("SAG_BOOK_MODE", raising=False)
    mode = sag.book.setup("Chapter 0", cpu={"epochs": 3, "pretrained": False},
                          gpu={"epochs": 2, "pretrained": True}, full={"epochs": 200, "pretrained": True})  # fmt: skip
    assert (mode.name, mode.device.type, mode.dataset) == ("gpu", "cuda", "synthetic")
    assert mode.settings == {"epochs": 2, "pretrained": True}
    assert made == [sag.book.WORLDS["gpu"]] and made[0]["num_train_ids"] == 751 and made[0]["num_test_ids"] == 750
    training = mode.training
    assert (training["backbone"], training["input_size"], training["pretrained"]) == ("resnet50", (160, 64), True)
    out = capsys.readouterr().out
    assert "mode: gpu (synthetic data at Market-1501 scale, ResNet-50" in out and "note:" not in out


def test_gpu_mode_falls_back_to_scratch_without_weights_and_to_cpu_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sag.book, "synthetic_root", lambda **world: tmp_path)
    monkeypatch.setattr(sag.book, "imagenet_weights_available", _no_weights)
    monkeypatch.setenv("SAG_BOOK_MODE", "gpu")
    mode = sag.book.setup(cpu={"pretrained": False}, full={"pretrained": True}, gpu={"pretrained": True})
    assert mode.name == "gpu" and mode.device == torch.device("cpu")
    assert mode.settings == {"pretrained": False} and mode.training["pretrained"] is False  # from scratch
    out = capsys.readouterr().out
    assert "note: no ImageNet weights (URLError: offline): the models train from scratch" in out
    assert "note: SAG_BOOK_MODE=gpu without a CUDA device" in out
    worlds = []
    monkeypatch.setattr(sag.book, "synthetic_root", lambda **world: worlds.append(world) or tmp_path)
    plain = sag.book.setup(cpu={"a": 1}, full={"a": 2}, synthetic={"num_train_ids": 5}, verbose=False)
    assert plain.settings == {"a": 1} and worlds[-1]["num_train_ids"] == 5  # no gpu settings: the cpu ones and world


def test_imagenet_weights_available_reports_a_failed_download(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights must be downloaded

    def offline(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert sag.book.imagenet_weights_available("resnet50") == (False, "OSError: no network in tests")


def test_cpu_mode_trains_the_demo_model_and_the_gpu_mode_resnet50_at_160x64(monkeypatch, tmp_path):
    from sag.commands.train import DEMO_DEFAULTS

    cpu = sag.book.TRAINING["cpu"]
    assert {k: cpu[k] for k in ("backbone", "input_size", "epochs", "batch_size", "lr")} == {
        k: DEMO_DEFAULTS[k] for k in ("backbone", "input_size", "epochs", "batch_size", "lr")}  # fmt: skip
    assert sag.book.WORLDS["cpu"] == DEMO_DEFAULTS["dataset_options"] | {"seed": 0}
    flops = sag.book.training_flops("resnet_small", (4,), (64, 32), classes=10)
    assert flops > sag.book.training_flops("resnet_small", (), (64, 32), classes=10) > 0  # SAG adds the 2x branch
    assert sag.book.gpu_seconds(4e12, 10, tflops=4.0) == pytest.approx(10.0)


def test_real_data_present_uses_the_loaders(tmp_path):
    assert not sag.book.real_data_present("market1501", {"SAG_DATA_ROOT": str(tmp_path / "missing")})
    assert not sag.book.real_data_present("market1501", {"SAG_DATA_ROOT": str(tmp_path)})
    root = synthetic_module.make_synthetic(tmp_path / "synthetic", progress=False, **TINY)
    assert sag.book.real_data_present("synthetic", {"SAG_DATA_ROOT": str(root)})


def test_setup_prints_mode_and_settings_and_seeds(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SAG_BOOK_MODE", "cpu")
    monkeypatch.setenv("SAG_CACHE_DIR", str(tmp_path))
    mode = sag.book.setup("Chapter 0", cpu={"steps": 3}, full={"steps": 300}, seed=5, synthetic=TINY)
    out = capsys.readouterr().out
    assert "Chapter 0\nmode: cpu" in out and "steps = 3" in out and "seed: 5" in out
    assert mode.name == "cpu" and not mode.full and mode.device == torch.device("cpu")
    assert mode.settings == {"steps": 3} and mode.dataset == "synthetic"
    first = torch.rand(3)
    data = mode.load_dataset()
    assert data.name == "synthetic" and len(data.train) > 0 and Path(data.root) == mode.data_root
    sag.book.setup(cpu={}, full={}, seed=5, synthetic=TINY, verbose=False)
    assert torch.equal(torch.rand(3), first)  # seeded again: same stream
    assert capsys.readouterr().out == ""


def _fake_training(monkeypatch, tmp_path, train) -> None:
    """sag.book.trained_model with ``train`` as the trainer, no checkpoint to load, and its world and cache in tmp."""
    monkeypatch.setattr("sag.engine.train", train)
    monkeypatch.setattr("sag.engine.load_checkpoint", lambda path, device=None: (torch.nn.Linear(1, 1), None))
    monkeypatch.setattr(sag.book, "synthetic_root", lambda **world: tmp_path / "world")
    monkeypatch.setenv("SAG_CACHE_DIR", str(tmp_path / "cache"))


def test_trained_model_is_cached_by_code_and_settings(monkeypatch, tmp_path):
    calls = []

    class Result:
        pass

    def fake_train(config):
        calls.append(config)
        return Result()

    _fake_training(monkeypatch, tmp_path, fake_train)
    mode = sag.book.BookMode("cpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    sag.book.trained_model(mode, depths=(4,))
    sag.book.trained_model(mode, depths=(4,))
    sag.book.trained_model(mode, depths=())
    first, again, baseline = calls
    assert first.out == again.out and first.out != baseline.out
    assert Path(first.out).parts[-2:] == ("D4", "seed0") and Path(baseline.out).parts[-2:] == ("baseline", "seed0")
    assert Path(first.out).parents[2] == tmp_path / "cache" / "runs"  # the layout of python -m sag ablate
    assert (first.backbone, first.input_size, first.epochs, first.depths) == ("resnet_small", (64, 32), 15, (4,))
    monkeypatch.setattr(sag.book, "package_digest", lambda: "changed code")
    sag.book.trained_model(mode, depths=(4,))
    assert calls[-1].out != first.out  # new sag code: a new run folder, never a stale model


def test_cpu_mode_hides_the_trainer_log_and_shows_it_when_training_fails(monkeypatch, tmp_path, capsys):
    def chatty_train(config):
        print(f"sag train: ... -> {config.out}")  # a cache path: differs from machine to machine
        if config.depths == ():
            raise RuntimeError("diverged")
        return object()

    _fake_training(monkeypatch, tmp_path, chatty_train)
    cpu = sag.book.BookMode("cpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    sag.book.trained_model(cpu, depths=(4,))
    assert capsys.readouterr().out == ""
    with pytest.raises(RuntimeError, match="diverged"):
        sag.book.trained_model(cpu, depths=())
    failed = capsys.readouterr()
    assert failed.out == "" and "sag train: ... -> " in failed.err and "baseline" in failed.err
    gpu = sag.book.BookMode("gpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    sag.book.trained_model(gpu, depths=(4,))
    assert "sag train: ... -> " in capsys.readouterr().out  # minutes per model on a GPU: the log stays visible


def test_readable_log_drops_what_changes_between_runs_in_cpu_mode_only(tmp_path, capsys):
    out = tmp_path / "runs" / "D4" / "seed0"
    log = (
        f"  fp32 on cpu -> {out}\n"
        "epoch 1/2: loss 3.2299 acc 6.2% 456 img/s lr 0.02/0.2\n"
        f"run dir              {out}\n"
        "train images/s       412.7\n"
        "wall time            12.3 s\n"
        "test rank1           18.37\n"
    )
    cpu = sag.book.BookMode("cpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    with sag.book.readable_log(cpu, RUN_DIR=out, DATA=tmp_path):
        print(log, end="")
    assert capsys.readouterr().out == (
        "  fp32 on cpu -> RUN_DIR\nepoch 1/2: loss 3.2299 acc 6.2% lr 0.02/0.2\nrun dir              RUN_DIR\n"
        "test rank1           18.37\n"
    )  # the longest path first: RUN_DIR, not DATA/runs/D4/seed0
    with pytest.raises(KeyboardInterrupt), sag.book.readable_log(cpu, RUN_DIR=out):
        print(f"-> {out}")
        raise KeyboardInterrupt  # what was printed still shows
    assert capsys.readouterr().out == "-> RUN_DIR\n"
    gpu = sag.book.BookMode("gpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    with sag.book.readable_log(gpu, RUN_DIR=out):
        print(log, end="")
    assert capsys.readouterr().out == log  # long runs: live and whole


def test_assert_learned_needs_a_clear_margin_over_the_untrained_network(monkeypatch, tmp_path):
    import types

    monkeypatch.setattr(sag.book, "untrained_scores", lambda mode, depths: {"rank1": 0.10, "mAP": 0.05})
    mode = sag.book.BookMode("cpu", torch.device("cpu"), "synthetic", tmp_path, 0)
    learned = types.SimpleNamespace(final={"rank1": 0.62, "mAP": 0.40}, history=[{"loss": 1.2}])
    line = sag.book.assert_learned(mode, learned, (4,), num_classes=100)
    assert line.startswith("D4: test rank-1 10.0 -> 62.0, mAP 5.0 -> 40.0") and "< 0.8 ln K = 3.68" in line
    with pytest.raises(AssertionError, match=r"did not learn: rank-1 10\.0 -> 25\.0"):
        sag.book.assert_learned(mode, types.SimpleNamespace(final={"rank1": 0.25, "mAP": 0.2}, history=[{"loss": 1}]),
                                (), num_classes=100)  # fmt: skip
    with pytest.raises(AssertionError, match=r"final loss 4\.00 is not below 0\.8 ln K"):
        sag.book.assert_learned(mode, types.SimpleNamespace(final={"rank1": 0.9, "mAP": 0.8}, history=[{"loss": 4}]),
                                (), num_classes=100)  # fmt: skip


def test_setup_refuses_settings_that_differ_between_modes():
    with pytest.raises(ValueError, match="same keys"):
        sag.book.setup(cpu={"steps": 3}, full={"epochs": 200}, verbose=False)


def test_torch_threads_is_scoped():
    before = torch.get_num_threads()
    with sag.book.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="at least 1"), sag.book.torch_threads(0):
        pass


def test_figure_style_is_light_and_non_interactive():
    sag.book.figure_style()
    assert matplotlib.get_backend().lower() == "agg"  # outside a kernel
    assert matplotlib.rcParams["axes.facecolor"] == "white" and matplotlib.rcParams["axes.grid"]  # whitegrid
    assert matplotlib.rcParams["savefig.bbox"] == "tight"


# --- sag.book: the shared synthetic dataset -------------------------------------------------------------------


def test_synthetic_root_generates_once_and_reuses(tmp_path, monkeypatch):
    root = sag.book.synthetic_root(tmp_path, **TINY)
    assert (root / synthetic_module.META_NAME).is_file() and root.parent == tmp_path
    calls = []
    monkeypatch.setattr(synthetic_module, "make_synthetic", lambda *a, **k: calls.append(a))
    assert sag.book.synthetic_root(tmp_path, **TINY) == root and calls == []  # cached: not drawn again
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folders left behind


def test_synthetic_root_depends_on_options(tmp_path):
    a = sag.book.synthetic_root(tmp_path, **TINY)
    b = sag.book.synthetic_root(tmp_path, **(TINY | {"seed": 1}))
    assert a != b
    assert json.loads((b / synthetic_module.META_NAME).read_text())["config"]["seed"] == 1


def test_synthetic_root_survives_a_lost_race(tmp_path, monkeypatch):
    real = synthetic_module.make_synthetic

    def lose_the_race(root, **options):
        real(root, **options)  # the other process finishes first ...
        raise OSError(39, "Directory not empty")  # ... so our own rename fails

    monkeypatch.setattr(synthetic_module, "make_synthetic", lose_the_race)
    root = sag.book.synthetic_root(tmp_path, **TINY)
    assert (root / synthetic_module.META_NAME).is_file()

    monkeypatch.setattr(synthetic_module, "make_synthetic", lambda root, **o: (_ for _ in ()).throw(OSError(28, "")))
    with pytest.raises(OSError):  # a real error (nothing was written) is not swallowed
        sag.book.synthetic_root(tmp_path, **(TINY | {"seed": 7}))


def _generate(cache: str) -> str:
    """Worker: the synthetic root, as a string."""
    return str(sag.book.synthetic_root(cache, **TINY))


def test_parallel_notebooks_share_one_dataset(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        roots = pool.map(_generate, [str(tmp_path)] * 2)
    assert roots[0] == roots[1]
    assert (Path(roots[0]) / synthetic_module.META_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [Path(roots[0]).name]


# --- book/_ext/sag_cache.py -----------------------------------------------------------------------------------


def _package(tmp_path: Path) -> Path:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "sub" / "mod.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("ignored\n")
    return package


def test_model_cache_digest_skips_the_packaged_results(tmp_path):
    package = tmp_path / "sag"
    (package / "engine").mkdir(parents=True)
    (package / "engine" / "train.py").write_text("x = 1\n")
    digest = sag.book.package_digest(package)
    (package / "_data" / "results").mkdir(parents=True)
    (package / "_data" / "results" / "collect.py").write_text("print()\n")  # a wheel's copy of results/
    assert sag.book.package_digest(package) == digest  # a wheel and a checkout share cached models
    (package / "engine" / "train.py").write_text("x = 2\n")
    assert sag.book.package_digest(package) != digest
    assert sag.book.package_digest() == sag.book.package_digest(Path(sag.book.__file__).parent)


def test_package_digest_tracks_python_files_only(tmp_path):
    package = _package(tmp_path)
    digest = sag_cache.package_digest(package)
    (package / "notes.txt").write_text("changed\n")
    assert sag_cache.package_digest(package) == digest
    (package / "sub" / "mod.py").write_text("y = 3\n")
    assert sag_cache.package_digest(package) != digest
    with pytest.raises(FileNotFoundError):
        sag_cache.package_digest(tmp_path / "nope")


def test_package_dir_is_the_imported_sag():
    assert sag_cache.package_dir() == Path(sag.__file__).parent


def _fake_app(tmp_path: Path) -> types.SimpleNamespace:
    cache = tmp_path / "_build" / ".jupyter_cache"
    env = types.SimpleNamespace(
        mystnb_config=types.SimpleNamespace(execution_cache_path=str(cache)),
        all_docs={"intro": 1.0, "04_dual_resolution": 1.0, "05_grid_softmax": 1.0},
    )
    return types.SimpleNamespace(env=env, outdir=str(tmp_path / "_build" / "html"))


def test_a_package_change_clears_the_cache_and_reexecutes_everything(tmp_path, monkeypatch):
    package = _package(tmp_path)
    results = tmp_path / "results"
    (results / "study").mkdir(parents=True)
    (results / "study" / "results.csv").write_text("row,mAP\nD4,10\n")
    monkeypatch.setattr(sag_cache, "package_dir", lambda: package)
    monkeypatch.setattr(sag_cache, "RESULTS_DIR", results)
    app = _fake_app(tmp_path)
    cache = Path(app.env.mystnb_config.execution_cache_path)

    sag_cache._on_builder_inited(app)  # first build: nothing cached yet
    (cache / "executed").mkdir(parents=True)
    (cache / "executed" / "nb.ipynb").write_text("{}")  # outputs stored by that build
    sag_cache._on_build_finished(app, None)
    assert (cache / sag_cache.STAMP).read_text().strip() == sag_cache.inputs_digest(package, results)

    app = _fake_app(tmp_path)  # second build, package unchanged: the cache stays
    sag_cache._on_builder_inited(app)
    assert (cache / "executed" / "nb.ipynb").is_file()
    assert sag_cache._on_env_get_outdated(app, app.env, set(), set(), set()) == []

    (package / "__init__.py").write_text("x = 2\n")  # the package changes
    app = _fake_app(tmp_path)
    sag_cache._on_builder_inited(app)
    assert not (cache / "executed").exists()  # stale outputs are gone
    outdated = sag_cache._on_env_get_outdated(app, app.env, {"intro"}, set(), set())
    assert outdated == ["04_dual_resolution", "05_grid_softmax"]  # every other document is read again

    sag_cache._on_build_finished(app, RuntimeError("a chapter failed"))
    assert not (cache / sag_cache.STAMP).exists()  # a failed build leaves the next one to re-execute
    sag_cache._on_build_finished(app, None)
    assert not sag_cache.is_stale(cache, sag_cache.inputs_digest(package, results))

    (cache / "executed").mkdir(parents=True)
    (results / "study" / "results.csv").write_text("row,mAP\nD4,11\n")  # a re-run study: chapters read it
    app = _fake_app(tmp_path)
    sag_cache._on_builder_inited(app)
    assert not (cache / "executed").exists()
    (results / "study" / "ablation.png").write_bytes(b"png")  # figures are not read as data: no effect
    assert sag_cache.inputs_digest(package, results) == app.sag_cache_digest


def test_the_extension_is_wired_into_the_book():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    local = config["sphinx"]["local_extensions"]
    assert (ROOT / "book" / local["sag_cache"] / "sag_cache.py").is_file()
    assert config["execute"]["execute_notebooks"] == "cache" and config["execute"]["raise_on_error"] is True
    calls = []
    app = types.SimpleNamespace(connect=lambda event, handler, **kw: calls.append(event))
    assert sag_cache.setup(app)["parallel_read_safe"] is True
    assert calls == ["builder-inited", "env-get-outdated", "build-finished"]
