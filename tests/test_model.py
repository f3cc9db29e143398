"""The SAG model, one paper equation at a time (section 3, Eq. 1-7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import sag
from sag.models import SAGModule, build_model, grid_softmax, max_filter_align

PAPER_GRIDS = {1: (40, 16), 2: (20, 8), 3: (10, 4), 4: (5, 2)}  # Table 1, 160x64 input


def small(depths=(4,), **kw):
    """A resnet18 SAG model for fast tests."""
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=7, depths=depths, **kw)


def test_issue_example_grid_shapes_resnet50():
    model = sag.build_model(num_classes=10, depths=(1, 2, 3, 4))
    grids = model.attention_grids(torch.randn(2, 3, 160, 64))
    assert {d: tuple(g.shape) for d, g in grids.items()} == {d: (2, 1, *hw) for d, hw in PAPER_GRIDS.items()}


@pytest.mark.parametrize("size,expect", [((160, 64), PAPER_GRIDS), ((256, 128), {1: (64, 32), 4: (8, 4)})])
def test_grid_shapes_other_sizes(size, expect):
    model = small(depths=tuple(expect)).eval()
    grids = model.attention_grids(torch.randn(3, 3, *size))
    for depth, hw in expect.items():
        assert grids[depth].shape == (3, 1, *hw)


@pytest.mark.parametrize("depths", [(1,), (2,), (3,), (4,), (1, 2), (1, 2, 3), (1, 2, 3, 4), (2, 4)])
def test_every_table1_row_sums_to_one(depths):
    model = small(depths).train()
    grids = model.attention_grids(torch.randn(4, 3, 160, 64))
    assert sorted(grids) == list(depths)
    for grid in grids.values():
        assert torch.all(grid >= 0)
        torch.testing.assert_close(grid.sum(dim=(1, 2, 3)), torch.ones(4))


def test_grid_softmax_is_eq4_over_the_whole_grid():
    scores = torch.randn(2, 1, 5, 2)
    grid = grid_softmax(scores)
    flat = scores.flatten(1)
    expected = torch.exp(flat) / torch.exp(flat).sum(dim=1, keepdim=True)
    torch.testing.assert_close(grid.flatten(1), expected)


def test_sag_module_grid_is_conv_bn_relu_softmax():
    torch.manual_seed(1)
    module = SAGModule(8).eval()
    module.bn.running_mean.fill_(0.3)
    module.bn.running_var.fill_(2.0)
    low = torch.randn(2, 8, 4, 3)
    e = F.relu(module.bn(module.conv(low)))
    expected = torch.softmax(e.flatten(1), dim=1).view(2, 1, 4, 3)
    torch.testing.assert_close(module.grid(low), expected)


def slow_max_filter(high: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Reference: loop over grid cells and take the max of each non-overlapping region."""
    n, c, hh, hw = high.shape
    kh, kw = hh // h, hw // w
    out = torch.empty(n, c, h, w)
    for i in range(h):
        for j in range(w):
            region = high[:, :, i * kh : (i + 1) * kh, j * kw : (j + 1) * kw]
            out[:, :, i, j] = region.amax(dim=(2, 3))
    return out


@pytest.mark.parametrize("shape,grid", [((2, 3, 10, 4), (5, 2)), ((1, 4, 12, 6), (3, 2)), ((2, 2, 8, 8), (8, 8))])
def test_max_filter_align_matches_slow_reference(shape, grid):
    high = torch.randn(shape)
    torch.testing.assert_close(max_filter_align(high, grid), slow_max_filter(high, *grid))


def test_max_filter_align_rejects_uneven_regions():
    with pytest.raises(ValueError, match="cannot be split into a 5x2 grid"):
        max_filter_align(torch.randn(1, 2, 11, 4), (5, 2))


def test_eq6_product_and_eq7_l2_norm():
    torch.manual_seed(2)
    high, low = torch.randn(2, 6, 10, 4), torch.randn(2, 6, 5, 2)
    plain = SAGModule(6).eval()
    v, g = plain(high, low)
    torch.testing.assert_close(v, slow_max_filter(high, 5, 2) * g)
    normed = SAGModule(6, l2_normalize=True).eval()  # per sample: one norm over (C, h, w)
    normed.load_state_dict(plain.state_dict())
    v2, _ = normed(high, low)
    norms = v.flatten(1).norm(dim=1).clamp_min(1e-12).view(2, 1, 1, 1)
    torch.testing.assert_close(v2, v / norms)
    torch.testing.assert_close(v2.flatten(1).norm(dim=1), torch.ones(2))
    zero, _ = normed(torch.zeros_like(high), low)  # eps keeps zeros finite
    assert torch.all(zero == 0)


def test_eq7_per_sample_keeps_the_grid_per_cell_cancels_it():
    torch.manual_seed(4)
    high, low = torch.randn(2, 6, 10, 4), torch.randn(2, 6, 5, 2)
    grads = {}
    for mode in ("sample", "cell"):
        module = SAGModule(6, l2_normalize=True, l2_mode=mode).train()
        v, _ = module(high, low)
        (v * torch.randn_like(v)).sum().backward()
        grads[mode] = module.conv.weight.grad.abs().sum().item()
        if mode == "cell":  # v_j / ||v_j|| = a_j / ||a_j||: the grid has no effect
            aligned = slow_max_filter(high, 5, 2)
            torch.testing.assert_close(v, aligned / aligned.norm(dim=1, keepdim=True))
    assert grads["sample"] > 1e-3 and grads["cell"] < 1e-5 * grads["sample"]
    with pytest.raises(ValueError, match="unknown l2_mode 'pixel'; valid: sample, cell"):
        SAGModule(6, l2_mode="pixel")


def test_dual_resolution_uses_upsampled_input_and_shared_weights():
    model = small((4,)).eval()
    backbone_params = {id(p) for p in model.stem.parameters()} | {id(p) for p in model.stages.parameters()}
    total_backbone = sum(1 for _ in model.stem.parameters()) + sum(1 for _ in model.stages.parameters())
    assert len(backbone_params) == total_backbone  # one parameter set, reused by both branches
    x = torch.randn(1, 3, 160, 64)
    seen = []
    hook = model.stem.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    model(x)
    hook.remove()
    assert seen == [(160, 64), (320, 128)]  # Eq. 1: the same stem sees I2 and I1 = 2x I2


def test_upsampling_modes_follow_presets():
    x = torch.randn(1, 3, 160, 64)
    captured = {}
    for preset in ("paper", "released_code"):
        model = small((4,), preset=preset).eval()
        hook = model.stem.register_forward_hook(lambda m, inp, out, p=preset: captured.setdefault(p, []).append(inp[0]))
        model(x)
        hook.remove()
    torch.testing.assert_close(captured["paper"][1], F.interpolate(x, scale_factor=2, mode="bilinear"))
    torch.testing.assert_close(captured["released_code"][1], F.interpolate(x, scale_factor=2, mode="nearest"))


def test_gradients_reach_both_branches_and_sag_parameters():
    model = small((2, 4)).train()
    x = torch.randn(4, 3, 160, 64)
    branch_grads = {}

    def keep(name):
        def hook(module, inp, out):
            out.register_hook(lambda g: branch_grads.setdefault(name, []).append(g.abs().sum().item()))

        return hook

    handle = model.stem.register_forward_hook(keep("stem"))
    loss = F.cross_entropy(model(x), torch.arange(4) % 7)
    loss.backward()
    handle.remove()
    assert len(branch_grads["stem"]) == 2 and all(g > 0 for g in branch_grads["stem"])  # low and high branch
    for module in model.sag.values():
        assert module.conv.weight.grad is not None and module.conv.weight.grad.abs().sum() > 0
        assert module.bn.weight.grad.abs().sum() > 0
    assert model.stages[0][0].conv1.weight.grad.abs().sum() > 0


def test_baseline_parameter_count_is_backbone_plus_head():
    for name, classes in [("resnet18", 7), ("resnet50", 751)]:
        model = build_model(name, num_classes=classes, depths=())
        ref = torchvision.models.get_model(name)
        backbone = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("fc."))
        head = ref.fc.in_features * classes + classes
        assert sum(p.numel() for p in model.parameters()) == backbone + head


def test_sag_adds_only_its_modules():
    base, d4 = small(()), small((4,))
    extra = sum(p.numel() for p in d4.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == 512 + 1 + 2  # conv1x1 weight + bias, BN weight + bias


def test_baseline_equals_torchvision_resnet_features():
    model = small(()).eval()
    ref = torchvision.models.get_model("resnet18").eval()
    mapping = {"conv1": "stem.0", "bn1": "stem.1", "layer1": "stages.0", "layer2": "stages.1"}
    mapping |= {"layer3": "stages.2", "layer4": "stages.3"}
    state = {}
    for k in ref.state_dict():
        prefix = k.split(".")[0]
        if prefix in mapping:
            state[k] = model.state_dict()[mapping[prefix] + k[len(prefix) :]]
        else:
            state[k] = ref.state_dict()[k]
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 160, 64)
    ref.fc = torch.nn.Identity()
    torch.testing.assert_close(model(x), ref(x))


def test_train_returns_logits_eval_returns_embedding():
    for preset, dim in (("paper", 512), ("released_code", 512)):
        model = small((4,), preset=preset)
        x = torch.randn(3, 3, 160, 64)
        assert model.train()(x).shape == (3, 7)
        emb = model.eval()(x)
        assert emb.shape == (3, dim)
        if preset == "released_code":
            torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_released_code_head_layers():
    head = small((4,), preset="released_code").head
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "LeakyReLU", "Dropout", "Linear"]
    assert head[0].out_features == 512 and head[2].negative_slope == 0.1 and head[3].p == 0.5


def test_paper_preset_l2_only_below_d4_and_override():
    model = small((1, 2, 3, 4))
    assert {d: m.l2_normalize for d, m in model.sag.items()} == {"1": True, "2": True, "3": True, "4": False}
    model = small((1, 4), l2_depths=True)
    assert all(m.l2_normalize for m in model.sag.values())
    model = small((1, 4), l2_depths=())
    assert not any(m.l2_normalize for m in model.sag.values())


def test_deterministic_for_fixed_seed_on_cpu():
    x = torch.randn(4, 3, 160, 64)
    outs = []
    for _ in range(2):
        model = small((3, 4)).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(model(x), torch.arange(4) % 7)
        loss.backward()
        opt.step()
        outs.append(model.eval()(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_parameter_groups_split_backbone_and_new_layers():
    model = small((4,))
    sag_ids, head_ids = {id(p) for p in model.sag.parameters()}, {id(p) for p in model.head.parameters()}
    backbone, new = model.parameter_groups()  # default: the SAG modules train with the backbone (both presets)
    assert len(backbone) + len(new) == len(list(model.parameters()))
    assert {id(p) for p in new} == head_ids and sag_ids <= {id(p) for p in backbone}
    backbone, new = model.parameter_groups(sag="new")
    assert {id(p) for p in new} == sag_ids | head_ids and len(backbone) + len(new) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown SAG lr group 'head'; valid: backbone, new"):
        model.parameter_groups(sag="head")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; valid backbones: resnet18, resnet34, resnet50"),
        ({"depths": (0,)}, r"invalid SAG depth\(s\) \[0\]; valid depths are 1, 2, 3, 4"),
        ({"depths": (5, 4)}, r"invalid SAG depth\(s\) \[5\]"),
        ({"depths": (4, 4)}, "repeated SAG depth"),
        ({"preset": "fancy"}, "unknown preset 'fancy'; valid presets: paper, released_code"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"input_size": (150, 64)}, "input size 150x64 cannot be divided into the SAG grid"),
        ({"upsample": "bicubic"}, "unknown upsampling 'bicubic'; valid: bilinear, nearest"),
        ({"head": "mlp"}, "unknown head 'mlp'; valid heads: fc, bottleneck"),
        ({"depths": (4,), "l2_depths": (2,)}, r"l2_depths \[2\] has no SAG module"),
        ({"colour": "red"}, r"unknown model option\(s\) \['colour'\]; valid options: upsample"),
    ],
)
def test_value_errors_name_the_valid_choices(kwargs, message):
    kwargs = {"backbone": "resnet18", **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_forward_rejects_indivisible_input():
    model = small((4,)).eval()
    with pytest.raises(ValueError, match=r"input size 100x64 cannot be divided .* multiples of 32"):
        model(torch.randn(1, 3, 100, 64))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        model(torch.randn(3, 160, 64))
    assert small((2,)).eval()(torch.randn(1, 3, 104, 48)).shape == (1, 512)  # D2 only needs multiples of 8


def test_pretrained_loads_from_local_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[1])

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not reach the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = build_model("resnet18", num_classes=5, depths=(4,), pretrained=True)
    torch.testing.assert_close(model.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(model.stages[3][1].conv2.weight, reference.layer4[1].conv2.weight)


def test_resnet_small_has_resnet50s_four_stages_and_strides():
    torch.manual_seed(0)
    model = build_model("resnet_small", num_classes=7, depths=(1, 2, 3, 4), input_size=(128, 64)).eval()
    grids = model.attention_grids(torch.randn(2, 3, 128, 64))
    assert {d: tuple(g.shape[-2:]) for d, g in grids.items()} == {1: (32, 16), 2: (16, 8), 3: (8, 4), 4: (4, 2)}
    assert [SAGModule is type(m) for m in model.sag.values()] == [True] * 4
    assert model.feature_dim == 128 and model(torch.randn(2, 3, 128, 64)).shape == (2, 128)
    baseline = build_model("resnet_small", num_classes=7, depths=()).eval()
    features, _ = baseline.backbone_features(torch.randn(1, 3, 160, 64))
    assert features.shape == (1, 128, 5, 2)  # stride 32, as ResNet-50
    assert sum(p.numel() for p in baseline.parameters()) < 400_000


def test_resnet_small_has_no_pretrained_weights():
    with pytest.raises(ValueError, match=r"backbone 'resnet_small' has no ImageNet weights.*drop --pretrained"):
        build_model("resnet_small", num_classes=3, pretrained=True)
