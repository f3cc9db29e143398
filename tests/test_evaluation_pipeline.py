"""Feature extraction, pairwise distances and the one-call evaluate() on a tiny model and a synthetic dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from sag.evaluation import (
    evaluate,
    evaluate_cuhk03_classic,
    evaluate_features,
    evaluate_ranking,
    extract_features,
    pairwise_distance,
    re_ranking,
)

KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "cmc", "num_valid_queries", "num_skipped_queries"}


class TinyEmbedder(nn.Module):
    """conv -> BN -> pool -> linear -> dropout: eval mode matters (BN statistics, dropout)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 2)), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def fake_loader(num_batches=3, batch=4, size=(16, 8)):
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(batch, 3, *size, generator=gen), torch.arange(batch) + 10 * b, torch.full((batch,), b))
        for b in range(num_batches)
    ]


def test_extract_features_eval_mode_flip_and_normalisation(device):
    model, loader = TinyEmbedder().train(), fake_loader()
    feats, pids, camids = extract_features(model, loader, device=device)
    assert model.training  # mode restored
    assert feats.shape == (12, 16) and feats.device.type == torch.device(device).type and not feats.requires_grad
    assert pids.tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23] and camids.dtype == torch.int64
    images = torch.cat([b[0] for b in loader]).to(device)
    model.eval()
    with torch.no_grad():
        plain = model(images)
        mirrored = model(images.flip(3))
    torch.testing.assert_close(feats, nn.functional.normalize(plain, dim=1))
    torch.testing.assert_close(torch.linalg.vector_norm(feats, dim=1), torch.ones(12, device=feats.device))
    raw, _, _ = extract_features(model, loader, normalize=False)
    torch.testing.assert_close(raw, plain)
    flipped, _, _ = extract_features(model, loader, flip=True, normalize=False)
    torch.testing.assert_close(flipped, (plain + mirrored) / 2)
    assert not model.training  # eval mode kept when it was the mode on entry


def test_extract_features_errors():
    with pytest.raises(ValueError, match="yielded no batches"):
        extract_features(TinyEmbedder(), [])
    with pytest.raises(ValueError, match=r"\(images, pids, camids\)"):
        extract_features(TinyEmbedder(), [torch.zeros(2, 3, 8, 8)])
    with pytest.raises(ValueError, match=r"\(batch, dim\) embeddings"):
        extract_features(nn.Conv2d(3, 4, 1), fake_loader(1))


def test_pairwise_distance_metrics():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 7)), rng.standard_normal((9, 7))
    sq = ((x[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distance(x, y).numpy(), sq, atol=1e-10)
    np.testing.assert_allclose(pairwise_distance(x, y, "euclidean").numpy(), np.sqrt(sq), atol=1e-7)
    cos = (x @ y.T) / np.linalg.norm(x, axis=1)[:, None] / np.linalg.norm(y, axis=1)[None]
    np.testing.assert_allclose(pairwise_distance(x, y, "cosine").numpy(), 1 - cos, atol=1e-10)
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distance(x, y, "manhattan")


def random_features(seed=0, num_q=20, num_g=60, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim))
    q_pids, g_pids = rng.integers(1, 6, num_q), rng.integers(0, 6, num_g)
    q = torch.from_numpy(centres[q_pids] + 0.8 * rng.standard_normal((num_q, dim))).float()
    g = torch.from_numpy(centres[g_pids] + 0.8 * rng.standard_normal((num_g, dim))).float()
    return q, g, q_pids, g_pids, rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)


def test_evaluate_features_streams_the_same_metrics(monkeypatch):
    import sag.evaluation.pipeline as pipeline
    import sag.evaluation.ranking as ranking

    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 130)  # ranked 2 queries at a time (60 gallery images) ...
    monkeypatch.setattr(pipeline, "_DISTANCE_ELEMENTS", 300)  # ... of 5 per distance product: blocks of 2, 2, 1
    q, g, *labels = random_features()
    out = evaluate_features(q, g, *labels, rerank=True)
    assert set(out) >= KEYS and {f"rerank_{k}" for k in KEYS} <= set(out) and "AP" not in out
    expected = evaluate_ranking(pairwise_distance(q, g), *labels)
    np.testing.assert_allclose(out["cmc"], expected["cmc"])
    assert out["mAP"] == pytest.approx(expected["mAP"]) and out["mINP"] == pytest.approx(expected["mINP"])
    reranked = evaluate_ranking(re_ranking(q, g), *labels)
    np.testing.assert_allclose(out["rerank_cmc"], reranked["cmc"])
    assert out["rerank_mAP"] == pytest.approx(reranked["mAP"])


def test_evaluate_features_single_gallery_shot():
    q, _, q_pids, _, q_camids, _ = random_features(num_q=40)
    out = evaluate_features(q, q, q_pids, q_pids, q_camids, q_camids, single_gallery_shot=True)
    distmat = pairwise_distance(q, q)
    classic = evaluate_cuhk03_classic(distmat, q_pids, q_pids, q_camids, q_camids)
    full = evaluate_ranking(distmat, q_pids, q_pids, q_camids, q_camids)
    np.testing.assert_allclose(out["cmc"], classic["cmc"])
    assert out["rank1"] == classic["rank1"] and out["mAP"] == pytest.approx(full["mAP"])
    assert set(out) >= KEYS


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from sag.data import load_dataset, make_synthetic

    root = make_synthetic(
        tmp_path_factory.mktemp("synthetic") / "data", num_train_ids=2, num_test_ids=5, images_per_id=4, progress=False
    )
    return load_dataset("synthetic", root)


def test_evaluate_on_synthetic_dataset(synthetic):
    from sag.data import make_eval_loader

    model = TinyEmbedder()
    out = evaluate(model, synthetic, rerank=True, batch_size=8)
    assert set(out) >= KEYS and "rerank_mAP" in out
    assert all(0 <= out[k] <= 1 for k in ("rank1", "rank5", "rank10", "mAP", "mINP", "rerank_rank1"))
    assert out["num_valid_queries"] + out["num_skipped_queries"] == len(synthetic.query)
    q = extract_features(model, make_eval_loader(synthetic.query, batch_size=5))
    g = extract_features(model, make_eval_loader(synthetic.gallery, batch_size=5))
    # the paper preset's test protocol: no flip, trapezoid AP, averaged over all queries
    assert out["protocol"] == {"flip": False, "ap": "trapezoid", "average": "all"}
    distmat = pairwise_distance(q[0], g[0])
    expected = evaluate_ranking(distmat, q[1], g[1], q[2], g[2], ap="trapezoid", average="all")
    np.testing.assert_allclose(out["cmc"], expected["cmc"])
    assert out["mAP"] == pytest.approx(expected["mAP"])
    standard = evaluate(model, synthetic, batch_size=8, ap="standard", average="valid")
    assert standard["mAP"] == pytest.approx(evaluate_ranking(distmat, q[1], g[1], q[2], g[2])["mAP"])

    multi = evaluate(model, synthetic, multi_query=True, pooling="max", flip=True, size=(64, 32))
    assert set(multi) >= KEYS
    with pytest.raises(ValueError, match="no multi-query images"):
        evaluate(model, dataclasses.replace(synthetic, multi_query=None), multi_query=True)


def test_evaluate_dispatches_classic_protocol(synthetic):
    test = synthetic.query + [r for r in synthetic.gallery if r.pid > 0]
    classic = dataclasses.replace(synthetic, query=test, gallery=test, protocol="classic", multi_query=None)
    out = evaluate(TinyEmbedder(), classic)
    assert out["repeats"] == 10  # single-gallery-shot CMC
    assert set(out) >= KEYS


def test_evaluate_defaults_to_the_model_input_size(synthetic):
    seen = []

    class SizeRecorder(TinyEmbedder):
        input_size = (64, 32)

        def forward(self, images):
            seen.append(tuple(images.shape[-2:]))
            return super().forward(images)

    evaluate(SizeRecorder(), synthetic, batch_size=8)
    assert set(seen) == {(64, 32)}
    seen.clear()
    evaluate(SizeRecorder(), synthetic, batch_size=8, size=(96, 32))
    assert set(seen) == {(96, 32)}
