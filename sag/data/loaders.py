"""Batches for training and evaluation: a DataLoader path, and a device-resident path with on-device augmentation."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from sag.data.records import ImageRecord
from sag.data.transforms import (
    INPUT_SIZE,
    AugmentConfig,
    augment_batch,
    build_transforms,
    get_augment,
    resize_transform,
)

_SEED_MIX = 0x9E3779B97F4A7C15  # spreads (seed, epoch, rank) into distinct generator seeds


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image as RGB; a missing or corrupt file raises an error that names it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image {path} does not exist; was the dataset moved or deleted?") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"cannot read image {path}: {err}; the file is corrupt or truncated, extract or download the dataset again"
        ) from err


class ImageDataset(Dataset):
    """Records as a torch Dataset: ``ds[i]`` -> (image float (3, H, W), pid, camid).

    ``ds[(i, seed)]`` applies the transform's randomness from ``seed`` (reproducible, whatever the worker).
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.records = list(records)
        self.transform = transform if transform is not None else build_transforms("paper", train=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[Any, int, int]:
        seed = None
        if isinstance(index, tuple):
            index, seed = index
        record = self.records[index]
        image = read_image(record.path)
        if seed is None:
            image = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(image)
        return image, record.pid, record.camid


def epoch_order(
    n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1, drop_last: bool = True
) -> torch.Tensor:
    """This rank's share of a shuffle of ``range(n)`` for ``epoch``: the same on every rank, then strided.

    Like DistributedSampler: with several ranks the permutation is trimmed (``drop_last``) or padded by
    repeating its start to a multiple of ``world_size``, so every rank gets as many samples.
    """
    _check_rank(rank, world_size)
    generator = torch.Generator().manual_seed(_mix(seed, epoch))
    order = torch.randperm(n, generator=generator)
    if world_size > 1:
        if drop_last:
            order = order[: n - n % world_size]
        elif n % world_size:
            order = torch.cat([order, order[: world_size - n % world_size]])
        order = order[rank::world_size]
    return order


class _SeededOrder(Sampler):
    """Yields (index, per-sample seed) pairs of an epoch, from ``epoch_order`` or a custom sampler."""

    def __init__(self, n: int, seed: int, rank: int, world_size: int, drop_last: bool, sampler: Sampler | None):
        self.n, self.seed, self.rank, self.world_size, self.drop_last = n, seed, rank, world_size, drop_last
        self.sampler = sampler
        self.epoch = 0

    def indices(self) -> list[int]:
        """This epoch's sample indices."""
        if self.sampler is not None:
            return [int(i) for i in self.sampler]
        return epoch_order(self.n, self.seed, self.epoch, self.rank, self.world_size, self.drop_last).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.indices()
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, self.rank + 1))
        seeds = torch.randint(0, 2**62, (len(indices),), generator=generator).tolist()
        return iter(zip(indices, seeds, strict=True))

    def __len__(self) -> int:
        if self.sampler is not None:
            return len(self.sampler)
        if self.world_size == 1:
            return self.n
        return self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)


class TrainLoader:
    """Shuffled training batches ``(images (B, 3, H, W) float on device, pids (B,) long)``, reproducible per epoch.

    ``resident=False``: a DataLoader decodes and augments each image on the CPU (``workers`` processes).
    ``resident=True``: the whole set is decoded once into a uint8 tensor on ``device``; flip, normalisation and
    random erasing run there on whole batches. Both follow the same augmentation distribution and, for a given
    seed and epoch, visit the images in the same order. Call ``set_epoch(epoch)`` before each epoch.
    ``rank``/``world_size`` give each DDP process its share of every epoch's shuffle; a custom ``sampler``
    replaces the shuffle (and does its own sharding; its ``set_epoch`` is called when it has one).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        preset: str | AugmentConfig = "paper",
        batch_size: int = 32,
        workers: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        resident: bool = False,
        size: tuple[int, int] = INPUT_SIZE,
        drop_last: bool = True,
        sampler: Sampler | None = None,
        rank: int = 0,
        world_size: int = 1,
        progress: bool | None = None,
    ) -> None:
        if not records:
            raise ValueError("cannot build a training loader from an empty list of records")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        _check_rank(rank, world_size)
        self.records = list(records)
        self.config = get_augment(preset)
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.device = torch.device(device)
        self.resident, self.size = resident, tuple(size)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.order = _SeededOrder(len(self.records), seed, rank, world_size, drop_last, sampler)
        self.pids = torch.tensor([r.pid for r in self.records], dtype=torch.long)
        if resident:
            self.images = decode_images(self.records, self.size, self.config, self.device, workers, progress)
            self.pids = self.pids.to(self.device)
            self.generator = torch.Generator(device=self.device)
            self.loader = None
        else:
            dataset = ImageDataset(self.records, build_transforms(self.config, train=True, size=self.size))
            self.loader = DataLoader(
                dataset,
                batch_sampler=BatchSampler(self.order, batch_size, drop_last),
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                collate_fn=_collate_train,
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle (and augmentation draws) the next iteration uses."""
        self.epoch = self.order.epoch = int(epoch)
        if self.order.sampler is not None and hasattr(self.order.sampler, "set_epoch"):
            self.order.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is not None:
            for images, pids in self.loader:
                yield images.to(self.device, non_blocking=True), pids.to(self.device, non_blocking=True)
            return
        order = torch.tensor(self.order.indices(), dtype=torch.long, device=self.device)
        self.generator.manual_seed(_mix(self.seed, self.epoch, self.rank + 1))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield augment_batch(self.images[idx], self.config, self.generator), self.pids[idx]


def make_train_loader(
    records: Sequence[ImageRecord],
    preset: str | AugmentConfig = "paper",
    batch_size: int = 32,
    workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resident: bool = False,
    size: tuple[int, int] = INPUT_SIZE,
    drop_last: bool = True,
    sampler: Sampler | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool | None = None,
) -> TrainLoader:
    """Training batches (see :class:`TrainLoader`); ``rank``/``world_size`` shard each epoch for DDP."""
    return TrainLoader(
        records,
        preset,
        batch_size,
        workers,
        seed,
        device,
        resident,
        size,
        drop_last,
        sampler,
        rank,
        world_size,
        progress,
    )


def make_eval_loader(
    records: Sequence[ImageRecord],
    preset: str | AugmentConfig = "paper",
    batch_size: int = 128,
    workers: int = 0,
    size: tuple[int, int] = INPUT_SIZE,
) -> DataLoader:
    """Batches ``(images (B, 3, H, W) float, pids (B,) long, camids (B,) long)`` in record order, no augmentation."""
    dataset = ImageDataset(records, build_transforms(preset, train=False, size=size))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available()
    )


def decode_images(
    records: Sequence[ImageRecord],
    size: tuple[int, int],
    config: AugmentConfig,
    device: torch.device | str = "cpu",
    workers: int = 0,
    progress: bool | None = None,
) -> torch.Tensor:
    """Every image resized with the preset's interpolation, as one uint8 tensor (N, 3, H, W) on ``device``."""
    device = torch.device(device)
    height, width = size
    need = len(records) * 3 * height * width
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise MemoryError(
                f"{len(records):,} images at {height}x{width} need {need / 2**30:.2f} GiB on {device}, "
                f"{free / 2**30:.2f} GiB free; use resident=False"
            )
    out = torch.empty((len(records), 3, height, width), dtype=torch.uint8, pin_memory=device.type == "cuda")
    resize = resize_transform(config, size)

    def load(i: int) -> None:
        image = np.array(resize(read_image(records[i].path)))  # (H, W, 3) uint8
        out[i] = torch.from_numpy(image).permute(2, 0, 1)

    threads = workers if workers > 0 else min(8, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(
            total=len(records),
            desc=f"decoding {len(records):,} images to {device}",
            unit="img",
            disable=progress_flag(progress),
        ) as bar,
    ):
        for _ in pool.map(load, range(len(records))):
            bar.update()
    return out.to(device, non_blocking=True)


def progress_flag(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a progress option: None = only on a terminal."""
    return None if progress is None else not progress


def _collate_train(batch: Iterable[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, pid, camid) samples -> images (B, 3, H, W), pids (B,)."""
    images, pids, _ = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(pids, dtype=torch.long)


def _mix(*values: int) -> int:
    """A 63-bit generator seed from several integers (distinct tuples give unrelated seeds)."""
    seq = np.random.SeedSequence([v & 0xFFFFFFFFFFFFFFFF for v in values] + [_SEED_MIX & 0xFFFFFFFF])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _check_rank(rank: int, world_size: int) -> None:
    """ValueError unless 0 <= rank < world_size."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
