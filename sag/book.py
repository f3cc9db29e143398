"""The book's chapter helper: ``mode = sag.book.setup(...)`` picks the cpu, gpu or full mode, data, seeds and style.

Every chapter starts with::

    mode = sag.book.setup("4. Dual resolution", cpu={"batch": 4}, gpu={"batch": 32}, full={"batch": 32})

* **cpu mode** (no CUDA device: CI, laptops, Colab without a GPU): the synthetic world (generated once into a
  shared cache folder), the small ``resnet_small`` backbone from scratch, about a minute per chapter on 2 cores.
* **gpu mode** (a CUDA device, no real dataset: Colab with a GPU): the synthetic world at Market-1501 scale,
  ResNet-50 at 160x64 with ImageNet weights when they can be downloaded (otherwise from scratch, with a
  printed note), settings sized for a few minutes per chapter on a T4-class GPU.
* **full mode**: a CUDA device and the real dataset; the paper's settings.

``SAG_BOOK_MODE`` (auto | cpu | gpu | full) forces a mode. All modes run the same cells with different
settings; the mode and its settings are printed so that nothing is skipped silently. Environment variables:
``SAG_BOOK_MODE``,
``SAG_DATA_ROOT`` (where real datasets live, default ``./data`` or ``../data``), ``SAG_CACHE_DIR``
(where the synthetic dataset is cached, default ``~/.cache/sag``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("auto", "cpu", "gpu", "full")
# tqdm.auto warns on import in a kernel without ipywidgets; chapters import sag.book first, so the warning stays
# out of the book's outputs (progress bars still work as text).
warnings.filterwarnings("ignore", message="IProgress not found", category=Warning)
# The book's synthetic world: small enough to generate in seconds and to train on in a minute on 2 cores.
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_train_ids": 32, "num_test_ids": 16, "images_per_id": 8, "seed": 0}
# The world each mode trains its models on (sag.book.trained_model): cpu mode the CLI demo's world, drawn at 64x32;
# gpu mode Market-1501's scale (751 / 750 ids, about 17 images per id and split), drawn at 128x64 as Market's boxes.
WORLDS: dict[str, dict[str, Any]] = {
    "cpu": {"num_train_ids": 100, "num_test_ids": 100, "images_per_id": 16, "size": (64, 32), "seed": 0},
    "gpu": {"num_train_ids": 751, "num_test_ids": 750, "images_per_id": 17, "size": (128, 64), "seed": 0},
}
# What sag.book.trained_model trains in each mode (the model, the input, the recipe's numbers). cpu: the CLI demo's
# settings (sag.commands.train.DEMO_DEFAULTS). gpu: ResNet-50 at 160x64 in mixed precision, GPU_EPOCHS epochs, sized
# from measured FLOPs to about 5 minutes per trained model on a T4: training_flops gives 24.8 GFLOP per training
# image for SAG-R50-D4 at 160x64 (5.0 for the baseline), so 3 epochs of the world's ~12,800 training images take
# gpu_seconds(24.8e9, 38_301) = 234 s at half a T4's fp32 peak (not yet measured on a GPU). full: the paper's.
GPU_EPOCHS = 3
TRAINING: dict[str, dict[str, Any]] = {
    "cpu": {
        "backbone": "resnet_small",
        "pretrained": False,
        "input_size": (64, 32),
        "epochs": 15,
        "batch_size": 16,
        "lr": 0.03,
        "precision": "fp32",
        "resident": True,
    },
    "gpu": {
        "backbone": "resnet50",
        "pretrained": True,
        "input_size": (160, 64),
        "epochs": GPU_EPOCHS,
        "batch_size": 32,
        "lr": 0.01,
        "precision": "fp16",
        "resident": True,
    },
    "full": {
        "backbone": "resnet50",
        "pretrained": True,
        "input_size": (160, 64),
        "epochs": None,
        "batch_size": None,
        "lr": None,
        "precision": "fp32",
        "resident": False,
    },
}
T4_TFLOPS = 8.1  # NVIDIA T4: fp32 peak (65 fp16 with tensor cores); gpu_seconds assumes half the fp32 peak sustained


@dataclass(frozen=True)
class BookMode:
    """What a chapter runs with: mode name, device, dataset name and root, seed and the chosen settings."""

    name: str  # "cpu", "gpu" or "full"
    device: Any  # torch.device
    dataset: str  # a sag.data.DATASETS name: "synthetic" in CPU mode
    data_root: Path
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # printed under the mode (e.g. "no ImageNet weights: from scratch")
    pretrained: bool = False  # ImageNet weights are available to this mode's models

    @property
    def full(self) -> bool:
        """True in full mode (paper settings, real data)."""
        return self.name == "full"

    @property
    def training(self) -> dict[str, Any]:
        """The settings ``trained_model`` trains with in this mode (pretrained only when the weights exist)."""
        return TRAINING[self.name] | {"pretrained": TRAINING[self.name]["pretrained"] and self.pretrained}

    def load_dataset(self, **options: Any) -> Any:
        """The mode's dataset as a ``sag.data.ReIDDataset``."""
        from sag.data import load_dataset

        return load_dataset(self.dataset, self.data_root, **options)

    def describe(self, chapter: str = "") -> str:
        """The lines printed at the top of a chapter (short enough for a rendered page)."""
        what = {
            "cpu": "synthetic data, small settings",
            "gpu": "synthetic data at Market-1501 scale, ResNet-50",
            "full": "real data, the paper's settings",
        }[self.name]
        lines = [chapter] if chapter else []
        lines += [
            f"mode: {self.name} ({what}; SAG_BOOK_MODE=cpu|gpu|full forces a mode)",
            f"device: {self.device} | seed: {self.seed} | dataset: {self.dataset} in {_short(self.data_root)}",
        ]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"  {key} = {value!r}" for key, value in self.settings.items()]
        return "\n".join(lines)


def setup(
    chapter: str = "",
    *,
    cpu: Mapping[str, Any] | None = None,
    full: Mapping[str, Any] | None = None,
    gpu: Mapping[str, Any] | None = None,
    dataset: str = "market1501",
    seed: int = 0,
    synthetic: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> BookMode:
    """Pick the chapter's mode, prepare its data, seed everything, set the figure style and print the mode.

    ``cpu``, ``gpu`` and ``full`` are the chapter's settings in each mode; they must have the same keys. A chapter
    that gives ``gpu`` settings gets ``WORLDS["gpu"]`` (Market-1501's scale) in gpu mode; one that does not runs
    its ``cpu`` settings and world on the GPU. ``dataset`` is the real dataset full mode uses; ``synthetic``
    overrides ``SYNTHETIC_DEFAULTS`` (the cpu world).
    """
    import torch

    cpu, full = dict(cpu or {}), dict(full or {})
    gpu_given = gpu is not None
    gpu = dict(cpu if gpu is None else gpu)
    if not set(cpu) == set(gpu) == set(full):
        raise ValueError(
            f"cpu, gpu and full settings must have the same keys, got {sorted(cpu)}, {sorted(gpu)} and "
            f"{sorted(full)}; give every setting a value in every mode"
        )
    name = choose_mode(dataset)
    if name == "full":
        root = real_data_root()
        mode = BookMode("full", _device(torch), dataset, root, seed, full, pretrained=True)
    elif name == "gpu":  # a chapter without gpu settings keeps its CPU world (its cells expect that data)
        world = WORLDS["gpu"] if gpu_given else SYNTHETIC_DEFAULTS | dict(synthetic or {})
        mode = gpu_mode(seed, gpu, world)
    else:
        mode = BookMode("cpu", torch.device("cpu"), "synthetic", synthetic_root(**dict(synthetic or {})), seed, cpu)
    seed_everything(seed)
    figure_style()
    if verbose:
        print(mode.describe(chapter))
    return mode


def gpu_mode(seed: int, settings: dict[str, Any], world: Mapping[str, Any] | None = None) -> BookMode:
    """The gpu mode: CUDA (CPU with a note when forced without one), the Market-scale synthetic world, ImageNet
    weights when they can be downloaded (a chapter's ``pretrained`` setting is dropped, with a note, otherwise)."""
    import torch

    notes = []
    if torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
        notes.append("SAG_BOOK_MODE=gpu without a CUDA device: the gpu settings run on the CPU (slowly)")
    weights, why = imagenet_weights_available(TRAINING["gpu"]["backbone"])
    if not weights:
        notes.append(f"no ImageNet weights ({why}): the models train from scratch and learn less in the same time")
        if settings.get("pretrained"):
            settings = settings | {"pretrained": False}
    root = synthetic_root(**dict(WORLDS["gpu"] if world is None else world))
    return BookMode("gpu", device, "synthetic", root, seed, settings, tuple(notes), pretrained=weights)


def imagenet_weights_available(backbone: str = "resnet50") -> tuple[bool, str]:
    """(True, "") if torchvision's ImageNet weights of ``backbone`` load (cached or downloaded), else (False, why)."""
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(backbone)["IMAGENET1K_V1"]
        weights.get_state_dict(progress=False, check_hash=False)
    except Exception as err:  # any failure (offline, proxy, disk, bad file) means "train from scratch"
        return False, f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else 'download failed'}"
    return True, ""


def choose_mode(dataset: str = "market1501", environ: Mapping[str, str] | None = None) -> str:
    """'cpu', 'gpu' or 'full' from ``SAG_BOOK_MODE`` (auto | cpu | gpu | full).

    auto: full with a CUDA device and the real dataset, gpu with a CUDA device alone, cpu otherwise.
    """
    environ = os.environ if environ is None else environ
    requested = environ.get("SAG_BOOK_MODE", "auto").strip().lower() or "auto"
    if requested not in MODES:
        raise ValueError(f"SAG_BOOK_MODE={requested!r} is not a mode; use one of {', '.join(MODES)}")
    if requested in ("cpu", "gpu"):
        return requested
    present = real_data_present(dataset, environ)
    if requested == "full":
        if not present:
            raise FileNotFoundError(
                f"SAG_BOOK_MODE=full needs the {dataset} dataset under {_short(real_data_root(environ))}; "
                f"get it with `python -m sag download {dataset} --root {_short(real_data_root(environ))}` "
                "(or set SAG_DATA_ROOT), or unset SAG_BOOK_MODE for CPU mode"
            )
        return "full"
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "full" if present else "gpu"


def real_data_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where real datasets live: $SAG_DATA_ROOT, else ./data or ../data (the repository's data/ from book/)."""
    environ = os.environ if environ is None else environ
    if environ.get("SAG_DATA_ROOT"):
        return Path(environ["SAG_DATA_ROOT"]).expanduser()
    for candidate in (Path("data"), Path("..") / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return Path("data").resolve()


def real_data_present(dataset: str, environ: Mapping[str, str] | None = None) -> bool:
    """True if ``sag.data.load_dataset(dataset, real_data_root())`` finds the dataset."""
    root = real_data_root(environ)
    if not root.is_dir():
        return False
    from sag.data import load_dataset

    try:
        load_dataset(dataset, root)
    except FileNotFoundError:
        return False
    return True


def synthetic_root(cache_dir: str | os.PathLike[str] | None = None, **options: Any) -> Path:
    """The book's synthetic dataset, generated once per set of options into the cache folder; returns its root.

    Safe for notebooks running in parallel without locks: ``make_synthetic`` draws into a temporary folder and
    renames it into place; a process that loses the race finds the winner's complete dataset and uses it.
    """
    from sag.data import render as render_module
    from sag.data import synthetic as synthetic_module

    options = SYNTHETIC_DEFAULTS | options
    cache = Path(cache_dir).expanduser() if cache_dir else _cache_dir()
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for module in (synthetic_module, render_module):  # new drawing code -> a new folder, never a stale one
        digest.update(Path(inspect.getsourcefile(module) or "").read_bytes())
    final = cache / f"synthetic-{digest.hexdigest()[:12]}"
    if (final / synthetic_module.META_NAME).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    try:
        synthetic_module.make_synthetic(final, progress=False, **options)
    except OSError:
        if not (final / synthetic_module.META_NAME).is_file():  # not a lost race: a real error
            raise
    return final


def package_digest(package: Path | None = None) -> str:
    """sha256 over the sag package's .py files (paths and bytes): a cached model is rebuilt when sag changes.

    The packaged copy of the results (``sag/_data``, in an installed wheel) is data, not code, and is skipped: a
    checkout and a wheel of the same code share their cached models.
    """
    from sag.resources import DATA_DIRNAME

    package = Path(__file__).resolve().parent if package is None else package
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == DATA_DIRNAME:
            continue
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def book_config(mode: BookMode, **overrides: Any) -> Any:
    """The TrainConfig of the mode's models (``training`` settings, the mode's world), before depths / seed / out."""
    from sag.engine import TrainConfig

    world = {} if mode.full else WORLDS[mode.name]
    root = str(mode.data_root) if mode.full else str(synthetic_root(**world))
    fields = {"dataset": mode.dataset, "data_root": root, "dataset_options": world, "preset": "paper",
              "progress": False, "device": str(mode.device), "seed": mode.seed} | mode.training  # fmt: skip
    if not mode.full:  # the small runs use every training id and keep the last epoch (full mode validates)
        fields |= {"val_ids": 0, "eval_every": 0}
    return TrainConfig(**(fields | overrides), depths=()).resolved()


def book_runs(config: Any) -> Path:
    """The cached ablation folder of ``config``: ``$SAG_CACHE_DIR/runs/<digest of sag's code and the settings>``."""
    shared = {k: v for k, v in config.to_dict().items() if k not in ("depths", "seed", "out", "resume", "overwrite")}
    key = hashlib.sha256((package_digest() + json.dumps(shared, sort_keys=True)).encode()).hexdigest()
    return _cache_dir() / "runs" / key[:16]


def trained_model(mode: BookMode, depths: tuple[int, ...] = (4,), seed: int | None = None, **overrides: Any) -> Any:
    """Train (or reuse) the mode's model with SAG at ``depths``; returns ``(model in eval mode, RunResult)``.

    Runs live in ``book_runs(...)/<row>/seed<k>``, the layout of ``python -m sag ablate``, under a digest of the
    sag package's code and every setting: chapters share a model (chapter 3's baseline, chapter 10's rows) and
    never a stale one; ``book_ablation`` reuses them. ``overrides``: TrainConfig fields replacing the mode's.
    """
    import dataclasses

    from sag import paper
    from sag.ablation import run_dir
    from sag.engine import load_checkpoint, train

    base = book_config(mode, **overrides)
    row = next(r for r, d in paper.ROW_DEPTHS.items() if d == tuple(depths))
    target = run_dir(book_runs(base), row, mode.seed if seed is None else seed)
    resume = (target / "last.pt").is_file()
    config = dataclasses.replace(base, depths=tuple(depths), seed=mode.seed if seed is None else seed,
                                 out=str(target), resume=resume, overwrite=not resume)  # fmt: skip
    with _trainer_output(mode):
        result = train(config)
    model, _ = load_checkpoint(target / "best.pt", device=mode.device)
    return model.eval(), result


@contextmanager
def _cpu_mode_stdout(mode: BookMode) -> Iterator[Any]:
    """In cpu mode, what the block prints goes into the yielded buffer (io.StringIO); other modes print live (None).

    The gpu and full modes train for minutes to days, so there the log (epochs, loss, progress) stays visible.
    """
    if mode.name != "cpu":
        yield None
        return
    import contextlib
    import io

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        yield log


@contextmanager
def _trainer_output(mode: BookMode) -> Iterator[None]:
    """Hide the trainer's log in cpu mode (cache paths and images/s change from run to run); shown if it fails."""
    with _cpu_mode_stdout(mode) as log:
        try:
            yield
        except BaseException:
            if log is not None:
                sys.stderr.write(log.getvalue())
            raise


@contextmanager
def readable_log(mode: BookMode, **names: str | os.PathLike) -> Iterator[None]:
    """In cpu mode, print the block's output at its end without what changes from run to run: images/s, wall times,
    and each path in ``names`` under its name (``RUN_DIR=out``). Other modes print live (their runs are long)."""
    log = None
    try:
        with _cpu_mode_stdout(mode) as log:
            yield
    finally:
        if log is not None:
            print(steady_text(log.getvalue(), names), end="")


def steady_text(text: str, names: Mapping[str, str | os.PathLike]) -> str:
    """``text`` without images/s, wall-time lines and the given paths (each replaced by its name)."""
    import re

    for name, path in sorted(names.items(), key=lambda item: -len(str(item[1]))):  # longest first: nested paths
        for form in {str(path), str(Path(path).expanduser().resolve())}:
            text = text.replace(form, name)
    text = re.sub(r" \d[\d.,]* img/s", "", text)
    return "".join(line for line in text.splitlines(keepends=True)
                   if not re.match(r"\s*(train images/s|wall time)\s", line))  # fmt: skip


def untrained_scores(mode: BookMode, depths: tuple[int, ...] = (4,)) -> dict[str, float]:
    """Test rank-1 / mAP (fractions) of the network ``trained_model`` would train, at its initial weights."""
    import dataclasses

    from sag.commands.train import untrained_scores as scores

    return scores(dataclasses.replace(book_config(mode), depths=tuple(depths)))


def assert_learned(mode: BookMode, result: Any, depths: tuple[int, ...], num_classes: int | None = None) -> str:
    """Fail unless the run beat its untrained network by >= 20 rank-1 points and ended below 0.8 ln K; one line.

    ``num_classes`` (K): the run's training identities, read from its checkpoint when not given.
    """
    import math

    if num_classes is None:
        from sag.engine.checkpoint import read_checkpoint

        num_classes = int(read_checkpoint(Path(result.run_dir) / "best.pt")["model_spec"]["num_classes"])
    before, after = untrained_scores(mode, depths), result.final
    gain = 100 * (after["rank1"] - before["rank1"])
    loss = result.history[-1]["loss"]
    assert gain >= 20, f"the model did not learn: rank-1 {100 * before['rank1']:.1f} -> {100 * after['rank1']:.1f}"
    assert loss < 0.8 * math.log(num_classes), f"final loss {loss:.2f} is not below 0.8 ln K"
    row = "baseline" if not depths else "D" + ",".join(map(str, depths))
    return (
        f"{row}: test rank-1 {100 * before['rank1']:.1f} -> {100 * after['rank1']:.1f}, mAP {100 * before['mAP']:.1f}"
        f" -> {100 * after['mAP']:.1f} (untrained -> trained); final loss {loss:.2f} < 0.8 ln K"
        f" = {0.8 * math.log(num_classes):.2f}"
    )


def book_ablation(mode: BookMode, rows: Sequence[str], seeds: int = 1, **overrides: Any) -> tuple[list, Path]:
    """``sag.ablation.run_ablation`` over the mode's cached runs (those of ``trained_model`` are reused)."""
    from sag.ablation import run_ablation

    base = book_config(mode, **overrides)
    out = book_runs(base)
    with _trainer_output(mode):
        results = run_ablation(base, rows, seeds, out, log=lambda message: None)
    return results, out


def training_flops(backbone: str, depths: tuple[int, ...], input_size: tuple[int, int], classes: int = 751) -> float:
    """Measured FLOPs of one training image (forward + backward) of the model, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sag.models import build_model

    model = build_model(backbone, num_classes=classes, depths=depths, input_size=input_size).train()
    images = torch.randn(2, 3, *input_size)
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / 2


def gpu_seconds(flops_per_image: float, images: int, tflops: float = T4_TFLOPS / 2) -> float:
    """Estimated seconds to train ``images`` images at ``flops_per_image`` on a GPU sustaining ``tflops``."""
    return flops_per_image * images / (tflops * 1e12)


def _cache_dir() -> Path:
    """$SAG_CACHE_DIR, else ~/.cache/sag."""
    return Path(os.environ.get("SAG_CACHE_DIR") or Path.home() / ".cache" / "sag").expanduser()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` CPU threads in torch (loops over tiny tensors run faster on one)."""
    import torch

    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def figure_style() -> None:
    """Light seaborn theme; inline figures in a notebook kernel (pyplot-free Figures too), Agg elsewhere."""
    import matplotlib

    shell = _kernel_shell()
    if shell is None:
        matplotlib.use("Agg")
    else:  # register the inline formatters now: a Figure returned before any pyplot figure shows as an image
        shell.run_line_magic("matplotlib", "inline")
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="deep")
    matplotlib.rcParams.update(
        {"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight", "figure.figsize": (6.4, 3.6)}
    )


def _kernel_shell() -> Any:
    """The IPython shell when running in a Jupyter kernel, else None."""
    if "ipykernel" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell if shell is not None and hasattr(shell, "kernel") else None


def _device(torch: Any) -> Any:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _short(path: Path) -> str:
    """Path with the home folder written as ~ (stable printed output across machines)."""
    try:
        return "~/" + str(Path(path).resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)
