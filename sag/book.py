"""The book's chapter helper: ``mode = sag.book.setup(...)`` picks CPU or full mode, data, seeds and figure style.

Every chapter starts with::

    mode = sag.book.setup("4. Dual resolution", cpu={"batch": 4}, full={"batch": 32})

* **CPU mode** (the default: CI, laptops, Colab without the dataset): the small synthetic dataset
  (generated once into a shared cache folder), small settings, about a minute per chapter on 2 cores.
* **Full mode**: a GPU and the real dataset are present, or ``SAG_BOOK_MODE=full`` asks for it
  explicitly; the paper's settings. ``SAG_BOOK_MODE=cpu`` forces CPU mode.

Both modes run the same cells with different settings; the mode and its settings are printed so that
nothing is skipped silently. Environment variables: ``SAG_BOOK_MODE`` (auto | cpu | full),
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("auto", "cpu", "full")
# tqdm.auto warns on import in a kernel without ipywidgets; chapters import sag.book first, so the warning stays
# out of the book's outputs (progress bars still work as text).
warnings.filterwarnings("ignore", message="IProgress not found", category=Warning)
# The book's synthetic world: small enough to generate in seconds and to train on in a minute on 2 cores.
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_train_ids": 32, "num_test_ids": 16, "images_per_id": 8, "seed": 0}


@dataclass(frozen=True)
class BookMode:
    """What a chapter runs with: mode name, device, dataset name and root, seed and the chosen settings."""

    name: str  # "cpu" or "full"
    device: Any  # torch.device
    dataset: str  # a sag.data.DATASETS name: "synthetic" in CPU mode
    data_root: Path
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """True in full mode (paper settings, real data)."""
        return self.name == "full"

    def load_dataset(self, **options: Any) -> Any:
        """The mode's dataset as a ``sag.data.ReIDDataset``."""
        from sag.data import load_dataset

        return load_dataset(self.dataset, self.data_root, **options)

    def describe(self, chapter: str = "") -> str:
        """The lines printed at the top of a chapter (short enough for a rendered page)."""
        what = "synthetic data, small settings" if self.name == "cpu" else "real data, the paper's settings"
        switch = "full" if self.name == "cpu" else "cpu"
        lines = [chapter] if chapter else []
        lines += [
            f"mode: {self.name} ({what}; SAG_BOOK_MODE={switch} switches)",
            f"device: {self.device} | seed: {self.seed} | dataset: {self.dataset} in {_short(self.data_root)}",
        ]
        lines += [f"  {key} = {value!r}" for key, value in self.settings.items()]
        return "\n".join(lines)


def setup(
    chapter: str = "",
    *,
    cpu: Mapping[str, Any] | None = None,
    full: Mapping[str, Any] | None = None,
    dataset: str = "market1501",
    seed: int = 0,
    synthetic: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> BookMode:
    """Pick the chapter's mode, prepare its data, seed everything, set the figure style and print the mode.

    ``cpu`` and ``full`` are the chapter's settings in each mode; they must have the same keys.
    ``dataset`` is the real dataset full mode uses; ``synthetic`` overrides ``SYNTHETIC_DEFAULTS``.
    """
    import torch

    cpu, full = dict(cpu or {}), dict(full or {})
    if set(cpu) != set(full):
        raise ValueError(
            f"cpu and full settings must have the same keys, got {sorted(cpu)} and {sorted(full)}; "
            "give every setting a value in both modes"
        )
    name = choose_mode(dataset)
    if name == "full":
        root = real_data_root()
        mode = BookMode("full", _device(torch), dataset, root, seed, full)
    else:
        mode = BookMode("cpu", torch.device("cpu"), "synthetic", synthetic_root(**dict(synthetic or {})), seed, cpu)
    seed_everything(seed)
    figure_style()
    if verbose:
        print(mode.describe(chapter))
    return mode


def choose_mode(dataset: str = "market1501", environ: Mapping[str, str] | None = None) -> str:
    """'cpu' or 'full' from ``SAG_BOOK_MODE`` (auto | cpu | full); auto = full iff a GPU and the dataset exist."""
    environ = os.environ if environ is None else environ
    requested = environ.get("SAG_BOOK_MODE", "auto").strip().lower() or "auto"
    if requested not in MODES:
        raise ValueError(f"SAG_BOOK_MODE={requested!r} is not a mode; use one of {', '.join(MODES)}")
    if requested == "cpu":
        return "cpu"
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

    return "full" if torch.cuda.is_available() and present else "cpu"


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
    cache = Path(cache_dir or os.environ.get("SAG_CACHE_DIR") or Path.home() / ".cache" / "sag").expanduser()
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
