"""Identity encoders (IResNet, dlib ResNet), the mapping network and checkpoint loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceregen.encoders import (
    IRESNET_LAYERS,
    DlibResNet,
    IdentityEncoder,
    MappingNetwork,
    build_backbone,
    build_identity_encoder,
    dlib_state_dict,
    iresnet,
    load_insightface_backbone,
    load_mica_checkpoint,
    load_state_strict,
    read_dlib_records,
)
from faceregen.encoders.dlib_resnet import add_zero_padded, dlib_model_path, parameter_count


@pytest.fixture(scope="module")
def dlib_state(tmp_path_factory):
    return dlib_state_dict(cache_dir=tmp_path_factory.mktemp("encoders_cache"))


def trainable_names(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------- IResNet


def test_iresnet_output_shape_and_input_check():
    model = iresnet(18).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 112, 112)).shape == (2, 512)
    with pytest.raises(ValueError, match=r"\(B, 3, 112, 112\)"):
        model(torch.randn(2, 3, 150, 150))
    with pytest.raises(ValueError, match="depth 101"):
        iresnet(101)


@pytest.mark.parametrize("depth", [50, 100])
def test_iresnet_keys_and_sizes_match_insightface(depth):
    state = iresnet(depth).state_dict()
    blocks = sum(IRESNET_LAYERS[depth])
    # per block: 3 BN x 5 entries + 2 convs + prelu; per stage: downsample conv + BN (5); stem 1+5+1; head 5+2+5
    assert len(state) == blocks * 18 + 4 * 6 + 7 + 12
    assert state["layer1.0.downsample.0.weight"].shape == (64, 64, 1, 1)
    assert state["layer4.0.downsample.1.running_var"].shape == (512,)
    assert state[f"layer3.{IRESNET_LAYERS[depth][2] - 1}.bn3.num_batches_tracked"].shape == ()
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["fc.weight"].shape == (512, 512 * 7 * 7)
    assert state["features.weight"].shape == (512,)
    assert "layer1.1.downsample.0.weight" not in state
    # insightface's published sizes: r50 43.6M, r100 65.2M parameters
    expected = {50: 43_590_848, 100: 65_156_160}[depth]
    assert sum(p.numel() for p in iresnet(depth).parameters()) == expected


def test_iresnet_mica_freeze_trains_only_the_head():
    model = iresnet(18, freeze="mica")
    expected = {n for n, _ in model.named_parameters() if n.split(".")[0] in ("layer4", "bn2", "fc")}
    assert trainable_names(model) == expected | {"features.bias"}

    model.train()
    frozen_bn, head_bn = model.layer2[0].bn1, model.layer4[0].bn1
    frozen_stats, head_stats = frozen_bn.running_mean.clone(), head_bn.running_mean.clone()
    assert not frozen_bn.training and head_bn.training
    out = model(torch.randn(3, 3, 112, 112))
    out.square().sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name in trainable_names(model)), name
    assert torch.equal(frozen_bn.running_mean, frozen_stats)
    assert not torch.equal(head_bn.running_mean, head_stats)


def test_freeze_all_and_none():
    frozen = iresnet(18, freeze="all").train()
    assert trainable_names(frozen) == set()
    assert not frozen(torch.randn(2, 3, 112, 112)).requires_grad
    free = iresnet(18, freeze="none")
    assert trainable_names(free) == {n for n, _ in free.named_parameters()} - {"features.weight"}
    with pytest.raises(ValueError, match="freeze='some'"):
        iresnet(18, freeze="some")


# ---------------------------------------------------------------------------------------------- dlib


def test_dlib_reader_parameter_count_and_structure(dlib_state):
    records = read_dlib_records(dlib_model_path())
    tags = [r.tag for r in records]
    assert tags.count("con_4") == 29 and tags.count("affine_") == 29 and tags.count("add_prev_") == 14
    model = DlibResNet()
    load_state_strict(model, dlib_state, "dlib")
    assert parameter_count(model) == 5_614_592
    assert torch.allclose(model.input_mean, torch.tensor([122.782, 117.001, 104.298]))
    assert model.stages[1][0].conv1.padding == (0, 0) and model.stages[1][1].conv1.padding == (1, 1)


def test_dlib_cache_is_reused(tmp_path):
    first = dlib_state_dict(cache_dir=tmp_path)
    cache_files = list(tmp_path.glob("*.pt"))
    assert [f.name for f in cache_files] == ["dlib_face_recognition_resnet_model_v1.pt"]
    mtime = cache_files[0].stat().st_mtime_ns
    second = dlib_state_dict(cache_dir=tmp_path)
    assert cache_files[0].stat().st_mtime_ns == mtime
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_dlib_shapes_and_mica_freeze(dlib_state):
    model = DlibResNet(freeze="mica")
    load_state_strict(model, dlib_state, "dlib")
    expected = {n for n, _ in model.named_parameters() if n.startswith(("stages.4.", "fc."))}
    assert trainable_names(model) == expected and len(expected) == 9
    chips = torch.randint(0, 256, (2, 3, 150, 150), dtype=torch.uint8)
    out = model(model.normalize_input(chips))
    assert out.shape == (2, 128)
    out.sum().backward()
    assert model.stem[0].weight.grad is None and model.stages[3][0].conv1.weight.grad is None
    assert model.stages[4][0].conv1.weight.grad is not None and model.fc.weight.grad is not None


def test_add_zero_padded_pads_channels_rows_and_columns_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 10.0)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(11).all() and out[0, 2:].eq(10).all() and out[0, :2, 3].eq(10).all()


# ---------------------------------------------------------------------------------------------- encoder


def test_identity_encoder_normalisation_and_properties(dlib_state):
    encoder = IdentityEncoder(iresnet(18)).eval()
    assert (encoder.input_size, encoder.alignment, encoder.feature_dim) == (112, "arcface_112", 512)
    chips = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 112, 112)
    x = encoder.normalize_input(chips)
    assert x[0].eq(-1).all() and x[1].eq(1).all()
    with torch.no_grad():
        assert torch.allclose(encoder(x).norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="uint8"):
        encoder.normalize_input(chips.float())

    dlib_encoder = build_identity_encoder("dlib_resnet", pretrained=None, normalize_embedding=False)
    load_state_strict(dlib_encoder.backbone, dlib_state, "dlib")
    assert (dlib_encoder.input_size, dlib_encoder.alignment, dlib_encoder.feature_dim) == (150, "dlib_150", 128)
    mean_chip = torch.tensor([123, 117, 104], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 150, 150)
    assert dlib_encoder.normalize_input(mean_chip).abs().max() < 0.3 / 256 + 1e-7


def test_mid_level_features_pool_the_tapped_stages_and_standardise_them(dlib_state):
    encoder = build_identity_encoder("dlib_resnet", pretrained=None, freeze="mica", feature_stages=[2, 1], feature_grid=4)
    load_state_strict(encoder.backbone, dlib_state, "dlib")
    assert encoder.feature_dim == (64 + 128) * 16
    torch.manual_seed(0)
    x = encoder.normalize_input(torch.randint(0, 256, (6, 3, 150, 150), dtype=torch.uint8))
    with torch.no_grad():
        stage_1 = encoder.backbone.stages[1](encoder.backbone.stages[0](encoder.backbone.stem(x)))
        stage_2 = encoder.backbone.stages[2](stage_1)
        raw = torch.cat([torch.nn.functional.adaptive_avg_pool2d(m, 4).flatten(1) for m in (stage_1, stage_2)], 1)
        assert torch.allclose(encoder.pooled_stages(x), raw, atol=1e-6)
        assert not encoder.train().feature_standardizer.training  # fixed features keep fixed statistics
        features = encoder.feature_standardizer.train()(encoder.pooled_stages(x))  # batch statistics: zero mean, unit variance
    assert features.shape == (6, 3072)
    assert features.mean(0).abs().max() < 1e-4
    assert torch.allclose(features.var(0, unbiased=False)[raw.var(0, unbiased=False) > 1e-2], torch.ones(1), atol=1e-2)
    # "mica" freezes every stage up to the taps; the later stages and fc do not shape the feature: fixed
    assert trainable_names(encoder) == set()
    scratch = build_identity_encoder("dlib_resnet", pretrained=None, freeze="none", feature_stages=[1, 2])
    assert trainable_names(scratch) and all(n.split(".")[1] in ("stem", "stages") for n in trainable_names(scratch))
    assert not any(n.startswith(("backbone.stages.3", "backbone.stages.4", "backbone.fc")) for n in trainable_names(scratch))
    with pytest.raises(ValueError, match="within 0..4"):
        build_identity_encoder("dlib_resnet", pretrained=None, feature_stages=[5])
    assert build_identity_encoder("iresnet18", feature_stages=[0, 3], feature_grid=1).feature_dim == 64 + 512


def test_encoder_state_carries_the_standardisation(dlib_state):
    """The MICA-layout encoder entry: backbone keys as they are plus feature_standardizer.*; strict both ways."""
    torch.manual_seed(0)
    encoder = build_identity_encoder("dlib_resnet", pretrained=None, freeze="mica", feature_stages=[1, 2])
    x = encoder.normalize_input(torch.randint(0, 256, (4, 3, 150, 150), dtype=torch.uint8))
    with torch.no_grad():
        encoder.feature_standardizer.train()(encoder.pooled_stages(x))  # moves the running statistics
        state = encoder.encoder_state_dict()
        assert set(dlib_state) < set(state) and state["feature_standardizer.running_mean"].abs().sum() > 0
        fresh = build_identity_encoder("dlib_resnet", pretrained=None, feature_stages=[1, 2])
        fresh.load_encoder_state(state, "base.tar")
        assert torch.equal(fresh.eval()(x), encoder.eval()(x))
    with pytest.raises(ValueError, match=r"base.tar.*missing keys \[feature_standardizer.running_mean"):
        fresh.load_encoder_state(dlib_state, "base.tar")
    with pytest.raises(ValueError, match=r"unexpected keys \[feature_standardizer"):
        build_identity_encoder("dlib_resnet", pretrained=None).load_encoder_state(state, "base.tar")


def test_build_backbone_names_and_default_dlib_weights(dlib_state, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default cache lands in ./cache/encoders
    backbone = build_backbone("dlib_resnet", freeze="mica")
    assert torch.equal(backbone.fc.weight, dlib_state["fc.weight"])
    assert (tmp_path / "cache/encoders/dlib_face_recognition_resnet_model_v1.pt").is_file()
    assert isinstance(build_backbone("iresnet34", pretrained=None), type(iresnet(18)))
    with pytest.raises(ValueError, match="iresnet101"):
        build_backbone("iresnet101")


# ---------------------------------------------------------------------------------------------- mapping


def test_mapping_network_layout_and_init():
    torch.manual_seed(0)
    mapping = MappingNetwork(512, 300, 300, hidden_layers=3)
    keys = {f"network.{i}.{p}" for i in range(4) for p in ("weight", "bias")} | {"output.weight", "output.bias"}
    assert set(mapping.state_dict()) == keys
    gain = math.sqrt(2.0 / (1 + 0.2**2))
    assert mapping.network[0].weight.std().item() == pytest.approx(gain / math.sqrt(512), rel=0.02)
    assert mapping.network[2].weight.std().item() == pytest.approx(gain / math.sqrt(300), rel=0.02)
    # default Linear init (uniform, std 1/sqrt(3 * fan_in)) scaled by 0.25
    assert mapping.output.weight.std().item() == pytest.approx(0.25 / math.sqrt(3 * 300), rel=0.03)
    assert mapping(torch.randn(4, 512)).shape == (4, 300)
    with pytest.raises(ValueError, match=r"\(B, 512\)"):
        mapping(torch.randn(4, 128))


# ---------------------------------------------------------------------------------------------- checkpoints


def test_insightface_backbone_file_round_trip(tmp_path):
    source = iresnet(18).eval()
    torch.nn.init.normal_(source.features.bias)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("iresnet18", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_mica_checkpoint_round_trip(tmp_path):
    arcface, mapping = iresnet(18), MappingNetwork(512, 300, 300, 3)
    flame_model = {f"regressor.{k}": v for k, v in mapping.state_dict().items()}
    flame_model |= {"generator.v_template": torch.zeros(5023, 3), "generator.eye_pose": torch.zeros(1, 6)}
    path = tmp_path / "mica.tar"
    torch.save({"arcface": arcface.state_dict(), "flameModel": flame_model, "epoch": 3, "opt": {"state": {}}}, path)

    encoder_state, mapping_state = load_mica_checkpoint(path)
    loaded_mapping = MappingNetwork(512, 300, 300, 3)
    load_state_strict(loaded_mapping, mapping_state, path)
    e = torch.randn(3, 512)
    assert torch.equal(loaded_mapping(e), mapping(e))
    loaded_arcface = iresnet(18, freeze="mica")
    load_state_strict(loaded_arcface, encoder_state, path)
    assert torch.equal(loaded_arcface.fc.weight, arcface.fc.weight)
    # a mica.tar also serves as an IResNet 'pretrained' file (its arcface entry)
    assert torch.equal(load_insightface_backbone(path)["conv1.weight"], arcface.conv1.weight)


def test_bad_files_raise_value_errors_naming_keys(tmp_path):
    state = iresnet(18).state_dict()
    del state["layer2.1.bn3.running_mean"]
    state["fc.weight"] = torch.zeros(512, 100)
    state["head.extra"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        build_backbone("iresnet18", pretrained=str(path))
    message = str(error.value)
    assert "broken.pth" in message and "layer2.1.bn3.running_mean" in message and "head.extra" in message
    assert "fc.weight: file (512, 100) vs model (512, 25088)" in message

    torch.save({"arcface": iresnet(18).state_dict(), "flameModel": {"generator.x": torch.zeros(1)}}, tmp_path / "m.tar")
    with pytest.raises(ValueError, match="regressor"):
        load_mica_checkpoint(tmp_path / "m.tar")
    with pytest.raises(ValueError, match="'arcface' and 'flameModel'"):
        load_mica_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_mica_checkpoint(tmp_path / "nothing.pth")
    (tmp_path / "pickle.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="pickle.pth"):
        load_insightface_backbone(tmp_path / "pickle.pth")


class _Unsafe:
    """Pickled by ``torch.save`` as a reference to this module's class: a global a weights-only load refuses."""


def test_unreadable_checkpoints_are_named_with_the_reason(tmp_path):
    from faceregen.encoders.checkpoints import read_torch_file

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.ckpt: empty file \(0 bytes\)"):
        read_torch_file(empty)
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}: a folder, expected a checkpoint file"):
        read_torch_file(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"w": torch.zeros(3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.ckpt: not a torch checkpoint"):
        read_torch_file(truncated)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"w": torch.zeros(3), "extra": _Unsafe()}, unsafe)
    with pytest.raises(ValueError, match=rf"unsafe.ckpt: names the global {__name__}._Unsafe, which is not loaded") as error:
        read_torch_file(unsafe)
    assert "weights_only" not in str(error.value)


def test_arbitrary_bytes_are_refused_as_not_a_checkpoint(tmp_path):
    """Random bytes reach the unpickler's internals (IndexError, KeyError, ...): all become the same ValueError."""
    from faceregen.encoders.checkpoints import read_torch_file

    garbage = tmp_path / "garbage.ckpt"
    rng = np.random.default_rng(0)
    for _ in range(200):
        garbage.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 512)), dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="garbage.ckpt: not a torch checkpoint"):
            read_torch_file(garbage)
