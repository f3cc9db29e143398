"""Transforms and loaders: both presets, the DataLoader and device-resident paths agree, determinism, sharding."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import SequentialSampler
from torchvision import transforms as T

from sag.data import (
    PRESETS,
    ImageDataset,
    ImageRecord,
    augment_batch,
    build_transforms,
    epoch_order,
    get_augment,
    load_dataset,
    make_eval_loader,
    make_synthetic,
    make_train_loader,
)
from sag.data.transforms import RandomErasing, erasing_regions


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[ImageRecord]:
    root = make_synthetic(tmp_path_factory.mktemp("loaders") / "s", num_train_ids=5, num_test_ids=2, images_per_id=5)
    return load_dataset("synthetic", root).train


def _batches(loader, epochs=(0,)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(x.cpu(), y.cpu()) for x, y in loader]
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_presets_eval_transforms(records: list[ImageRecord]) -> None:
    image = Image.open(records[0].path).convert("RGB")
    paper = build_transforms("paper", train=False)(image)
    assert paper.shape == (3, 160, 64) and paper.dtype == torch.float32
    assert paper.min() >= -1 and paper.max() <= 1 and paper.min() < -0.5 < 0.5 < paper.max()
    resized = T.functional.pil_to_tensor(image.resize((64, 160), Image.BILINEAR)).float() / 255
    assert torch.allclose((paper + 1) / 2, resized, atol=0.02)  # [-1, 1] scaling of the bilinear resize
    released = build_transforms("released_code", train=False, size=(96, 32))(image)
    bicubic = T.functional.pil_to_tensor(T.Resize((96, 32), T.InterpolationMode.BICUBIC)(image)).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(released, (bicubic - mean[:, None, None]) / std[:, None, None], atol=1e-5)


def test_training_transforms_follow_the_presets() -> None:
    paper = build_transforms("paper", train=True).transforms
    assert [type(t).__name__ for t in paper] == [
        "Resize",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
        "RandomErasing",
    ]
    assert paper[0].interpolation == T.InterpolationMode.BILINEAR and paper[-1].config.erasing_p == 0.5
    released = build_transforms("released_code", train=True).transforms
    assert released[0].interpolation == T.InterpolationMode.BICUBIC
    assert released[-1].config.erasing_p == 0.8 and released[-1].config.erasing_fill == 0.0
    assert PRESETS["paper"].erasing_fill == "random" and PRESETS["paper"].mean == (0.5, 0.5, 0.5)
    no_aug = build_transforms("paper", train=True, flip_p=0.0, erasing_p=0.0).transforms
    assert [type(t).__name__ for t in no_aug] == ["Resize", "ToTensor", "Normalize"]
    with pytest.raises(ValueError, match=r"unknown preset 'fast'; valid presets: paper, released_code"):
        build_transforms("fast", train=True)
    with pytest.raises(ValueError, match=r"erasing_fill must be 'random' or a number"):
        get_augment("paper", erasing_fill="mean")


def test_image_dataset_and_seeded_items(records: list[ImageRecord]) -> None:
    ds = ImageDataset(records, build_transforms("paper", train=True, erasing_p=1.0))
    image, pid, camid = ds[0]
    assert image.shape == (3, 160, 64) and (pid, camid) == (records[0].pid, records[0].camid)
    assert torch.equal(ds[(3, 123)][0], ds[(3, 123)][0])
    assert not torch.equal(ds[(3, 123)][0], ds[(3, 124)][0])
    state = torch.get_rng_state()
    ds[(1, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # seeded items leave the global RNG alone
    assert len(ds) == len(records)


def test_corrupt_truncated_and_missing_images_name_the_file(tmp_path: Path, records: list[ImageRecord]) -> None:
    garbage = tmp_path / "0001_c1s1_000001_00.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 128), (200, 10, 10)).save(buffer, "JPEG")
    truncated = tmp_path / "0001_c2s1_000002_00.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path in (garbage, truncated):
        with pytest.raises(ValueError, match=rf"cannot read image {path}: .*corrupt or truncated"):
            ImageDataset([ImageRecord(str(path), 1, 0)])[0]
    with pytest.raises(ValueError, match=rf"cannot read image {truncated}"):
        make_train_loader([*records[:3], ImageRecord(str(truncated), 1, 1)], resident=True, progress=False)
    with pytest.raises(FileNotFoundError, match=r"image .*gone.jpg does not exist"):
        ImageDataset([ImageRecord(str(tmp_path / "gone.jpg"), 1, 0)])[0]


def test_eval_loader_keeps_record_order_without_augmentation(records: list[ImageRecord]) -> None:
    loader = make_eval_loader(records, batch_size=8)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    assert images.shape == (len(records), 3, 160, 64)
    assert torch.cat([b[1] for b in batches]).tolist() == [r.pid for r in records]
    assert torch.cat([b[2] for b in batches]).tolist() == [r.camid for r in records]
    assert batches[0][1].dtype == torch.long
    assert torch.equal(images[0], build_transforms("paper", train=False)(Image.open(records[0].path).convert("RGB")))
    assert torch.equal(torch.cat([b[0] for b in loader]), images)


@pytest.mark.parametrize("resident", [False, True])
def test_train_loader_is_deterministic_per_seed_and_epoch(records, resident: bool, device: torch.device) -> None:
    kwargs = {"batch_size": 4, "seed": 7, "resident": resident, "device": device, "progress": False}
    a, b = make_train_loader(records, **kwargs), make_train_loader(records, **kwargs)
    assert len(a) == len(records) // 4
    first = _batches(a)
    assert first[0][0].shape == (4, 3, 160, 64) and first[0][1].dtype == torch.long
    assert _same(first, _batches(b))
    assert not _same(first, _batches(a, epochs=(1,)))
    assert _same(first, _batches(a, epochs=(0,)))  # back to epoch 0: the same batches again
    order = epoch_order(len(records), seed=7, epoch=0)[: len(a) * 4]
    assert torch.cat([y for _, y in first]).tolist() == [records[i].pid for i in order]
    other = make_train_loader(records, **{**kwargs, "seed": 8})
    assert not _same(first, _batches(other))


@pytest.mark.parametrize("preset", ["paper", "released_code"])
@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_both_paths_give_identical_batches_without_randomness(records, preset: str, flip_p: float) -> None:
    config = get_augment(preset, flip_p=flip_p, erasing_p=0.0)
    regular = make_train_loader(records, config, batch_size=5, seed=3)
    resident = make_train_loader(records, config, batch_size=5, seed=3, resident=True, progress=False)
    assert _same(_batches(regular, (0, 1)), _batches(resident, (0, 1)))


def test_dataloader_workers_do_not_change_the_batches(records: list[ImageRecord]) -> None:
    single = make_train_loader(records, batch_size=6, seed=2, workers=0)
    multi = make_train_loader(records, batch_size=6, seed=2, workers=2)
    assert _same(_batches(single, (0, 1)), _batches(multi, (0, 1)))


def _erasing_stats(masks: torch.Tensor) -> tuple[float, float, float]:
    """Fraction of images erased, mean erased area fraction and mean log aspect (h/w) of the erased ones."""
    erased = masks.flatten(1).any(1)
    m = masks[erased]
    h = m.any(2).sum(1).double()
    w = m.any(1).sum(1).double()
    area = m.flatten(1).double().mean(1)
    return erased.double().mean().item(), area.mean().item(), torch.log(h / w).mean().item()


@pytest.mark.parametrize("preset", ["paper", "released_code"])
def test_random_erasing_has_the_same_distribution_on_both_paths(preset: str) -> None:
    n, (height, width) = 3000, (40, 16)
    config = replace(get_augment(preset), erasing_fill=7.0)
    torch.manual_seed(0)
    erase = RandomErasing(config)
    single = torch.stack([erase(torch.zeros(3, height, width))[0] == 7.0 for _ in range(n)])  # (N, H, W)
    batch = erasing_regions(n, height, width, config, torch.Generator().manual_seed(0), torch.device("cpu"))
    s, b = _erasing_stats(single), _erasing_stats(batch)
    p = config.erasing_p
    assert abs(s[0] - p) < 4 * math.sqrt(p * (1 - p) / n) and abs(b[0] - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert abs(s[1] - b[1]) < 0.012 and 0.1 < b[1] < 0.3  # erased area fraction ~ U(0.02, 0.4), when it fits
    assert abs(s[2] - b[2]) < 0.08
    # where the rectangles fall: the per-pixel erase frequency agrees between the two paths
    assert (single.double().mean(0) - batch.double().mean(0)).abs().max() < 0.06


def test_flip_and_random_fill_statistics() -> None:
    n = 2000
    half = torch.zeros(n, 3, 8, 4, dtype=torch.uint8)
    half[..., 2:] = 255  # bright right half: a flip moves it to the left
    config = get_augment("paper", erasing_p=0.0)
    out = augment_batch(half, config, torch.Generator().manual_seed(1))
    flipped = out[:, 0, 0, 0] > 0
    assert abs(flipped.double().mean().item() - 0.5) < 0.05
    assert torch.equal(out[~flipped], torch.where(half[~flipped] > 0, 1.0, -1.0))  # [-1, 1] scaling
    image = Image.fromarray(half[0].permute(1, 2, 0).numpy())
    single = build_transforms(config, train=True, size=(8, 4))
    torch.manual_seed(1)
    per_image = np.mean([single(image)[0, 0, 0].item() > 0 for _ in range(n)])
    assert abs(per_image - 0.5) < 0.05
    # "random" fill: uniform pixels, normalised: in [-1, 1] with mean 0 for the paper preset
    fill = augment_batch(
        torch.zeros(400, 3, 40, 16, dtype=torch.uint8),
        get_augment("paper", flip_p=0.0, erasing_p=1.0),
        torch.Generator().manual_seed(2),
    )
    values = fill[fill != -1]
    assert values.numel() > 10_000 and values.min() >= -1 and values.max() <= 1 and abs(values.mean().item()) < 0.02


def test_distributed_sharding() -> None:
    full = epoch_order(10, seed=1, epoch=4)
    shards = [epoch_order(10, seed=1, epoch=4, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    joined = torch.stack(shards, 1).flatten()
    assert torch.equal(joined, full[:9])  # every rank cuts the same permutation: disjoint shards
    padded = [epoch_order(10, seed=1, epoch=4, rank=r, world_size=3, drop_last=False) for r in range(3)]
    assert [len(s) for s in padded] == [4, 4, 4] and set(torch.cat(padded).tolist()) == set(range(10))
    with pytest.raises(ValueError, match=r"need 0 <= rank < world_size, got rank=3, world_size=3"):
        epoch_order(10, seed=1, epoch=0, rank=3, world_size=3)


def test_sharded_loaders_split_an_epoch(records: list[ImageRecord]) -> None:
    per_rank = [
        make_train_loader(records, batch_size=2, seed=5, rank=r, world_size=2, resident=True, progress=False)
        for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == (len(records) // 2) // 2
    pids = [torch.cat([y for _, y in _batches(loader, (3,))]) for loader in per_rank]
    order = epoch_order(len(records), seed=5, epoch=3)
    expected = [records[i].pid for i in order]
    assert pids[0].tolist() == expected[0::2][: len(pids[0])] and pids[1].tolist() == expected[1::2][: len(pids[1])]


def test_custom_sampler_lengths_and_errors(records: list[ImageRecord]) -> None:
    for resident in (False, True):
        loader = make_train_loader(
            records, batch_size=4, sampler=SequentialSampler(range(len(records))), resident=resident, progress=False
        )
        assert torch.cat([y for _, y in loader]).tolist() == [r.pid for r in records][: len(loader) * 4]
    keep = make_train_loader(records, batch_size=4, drop_last=False)
    assert len(keep) == math.ceil(len(records) / 4) and sum(len(y) for _, y in keep) == len(records)
    with pytest.raises(ValueError, match=r"empty list of records"):
        make_train_loader([])
    with pytest.raises(ValueError, match=r"unknown preset"):
        make_train_loader(records, preset="imagenet")
