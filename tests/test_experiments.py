"""The five settings compose, start from what the paper says, and run end to end on tiny data."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("pretrained", "transfer", "scratch", "ssl_20pct", "ssl_100pct")


def compose_train(overrides=()):
    """The train config as `train.py` sees it (Hydra's runtime config set, so `${hydra:...}` resolves)."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def tiny(cfg, tmp_path: Path):
    """Shrink a composed config to seconds: toy face model, 10 identities, 2 lights, 1 batch per epoch."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.face_model = {"_target_": "face_models.toy_face_model", "subdivisions": 3}
        for gen, root in ((cfg.generator, "imperfect"), (cfg.base_stage.generator, "complete")):
            gen.update(root=str(tmp_path / root), n_identities=10, wounds_per_identity=1, resolution=96,
                       workers=1, contact_sheet_samples=2, lights=[[0.0, 0.0, 1.0], [0.3, 0.3, 0.9]])
        cfg.data.update(batch_size=4, num_workers=0, preprocess_workers=1)
        cfg.trainer.update(max_epochs=1, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1,
                           enable_model_summary=False, enable_progress_bar=False)
        cfg.base_stage.max_epochs = 1
        if cfg.get("ssl_stage"):
            cfg.ssl_stage.max_epochs = 1
            cfg.ssl_stage.multicrop.n_low_resolution = 1
        cfg.logger = {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(tmp_path / "run")}}
    return cfg


@pytest.mark.parametrize("setting", SETTINGS)
def test_settings_start_from_the_base_model_except_scratch(setting, tmp_path, monkeypatch):
    """What `run` does for each setting: the stages it asks for, the checkpoint MICA is built from, the base
    stage's read-out statistics it pools with, whether the encoder starts pretrained, and whether it trains
    (the stages and MICA are stand-ins here)."""
    import training.runner as runner

    base, ssl = tmp_path / "base" / "mica_base.tar", tmp_path / "ssl" / "mica_ssl.tar"
    calls = []
    monkeypatch.setattr(runner.BaseStage, "checkpoint", lambda stage: calls.append("base") or base)
    monkeypatch.setattr(runner.SSLStage, "checkpoint",
                        lambda stage: calls.append(("ssl", stage.start_checkpoint, stage.cfg.data.ssl_fraction)) or ssl)
    base_statistics, ssl_statistics = base.parent / "readout_statistics.npz", ssl.parent / "readout_statistics.npz"
    monkeypatch.setattr(runner.BaseStage, "statistics_path", lambda stage: base_statistics)
    monkeypatch.setattr(runner.SSLStage, "statistics_path", lambda stage: calls.append("ssl statistics") or ssl_statistics)

    class Built(Exception):
        pass

    def built(cfg, **overrides):
        calls.append(("mica", overrides.get("base_checkpoint"), overrides.get("base_statistics"),
                      cfg.model.identity_encoder.pretrained, cfg.train))
        raise Built

    monkeypatch.setattr(runner, "prepare_data_and_model", built)
    cfg = compose_train([f"experiment={setting}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(Built):
        runner.run(cfg)
    statistics = str(base_statistics)  # the base encoder's; after SwAV, the SwAV encoder's
    expected = {
        "pretrained": ["base", ("mica", str(base), statistics, "default", False)],
        "transfer": ["base", ("mica", str(base), statistics, "default", True)],
        "scratch": [("mica", None, None, None, True)],
        "ssl_20pct": ["base", ("ssl", base, 0.2), "ssl statistics", ("mica", str(ssl), str(ssl_statistics), "default", True)],
        "ssl_100pct": ["base", ("ssl", base, 1.0), "ssl statistics", ("mica", str(ssl), str(ssl_statistics), "default", True)],
    }
    assert calls == expected[setting]


def test_sweep_folders_resolve_before_hydra_runs_a_job(monkeypatch):
    """A multirun names its folder before Hydra's runtime config exists (no ${hydra:...} in it), and each
    job's subfolder after its experiment and seed are chosen."""
    import importlib
    import os

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    import train

    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    importlib.reload(train)
    assert os.environ["PROJECT_ROOT"] == str(ROOT)  # train.py names the root, wherever it is run from
    monkeypatch.setenv("PROJECT_ROOT", "/project")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=ssl_20pct", "seed=2"], return_hydra_config=True)
    HydraConfig.instance().cfg = None
    assert cfg.hydra.sweep.dir.startswith("/project/logs/multiruns/")
    with open_dict(cfg):
        cfg.hydra.job.num = 7
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "7_ssl_20pct_seed2"


@pytest.mark.parametrize("key", ["max_epochs", "max_steps"])
def test_a_training_run_that_would_train_nothing_is_refused(key, tmp_path):
    """Otherwise it exits 0 and its test metrics pass for a trained result of its setting in Table 1."""
    from training.runner import run

    cfg = tiny(compose_train(["experiment=transfer"]), tmp_path)
    with open_dict(cfg):
        cfg.trainer[key] = 0
    with pytest.raises(ValueError, match=rf"trainer.{key}=0 with train=true trains nothing"):
        run(cfg)
    assert not (tmp_path / "cache").exists()  # refused before building anything


def test_every_setting_shares_one_base_model():
    """Identical base weights: the base stage's cache key does not depend on the setting."""
    from training.base_stage import BaseStage

    keys = {BaseStage(compose_train([f"experiment={s}"])).key() for s in SETTINGS if s != "scratch"}
    assert len(keys) == 1
    assert BaseStage(compose_train(["experiment=transfer", "model.identity_encoder.backbone=iresnet18"])).key() not in keys


def test_swav_stage_is_one_per_fraction_shared_by_the_seeds(tmp_path):
    """ssl_20pct and ssl_100pct train SwAV on different images: different cache keys; seeds share theirs."""
    from training.ssl_stage import SSLStage

    start = tmp_path / "base.tar"
    start.write_bytes(b"base weights")
    key = {(s, seed): SSLStage(compose_train([f"experiment={s}", f"seed={seed}"]), start).key()
           for s in ("ssl_20pct", "ssl_100pct") for seed in (0, 1)}
    assert key["ssl_20pct", 0] == key["ssl_20pct", 1] != key["ssl_100pct", 0] == key["ssl_100pct", 1]
    start.write_bytes(b"other base weights")
    assert SSLStage(compose_train(["experiment=ssl_20pct"]), start).key() != key["ssl_20pct", 0]


def test_swav_stage_key_holds_only_what_the_stage_depends_on(tmp_path):
    """The data's runtime options and MICA's mapping network (which SwAV does not train by default) leave the
    SwAV stage's key as it is; the split, the encoder and, once SwAV trains it, the mapping network change it."""
    from training.ssl_stage import SSLStage

    start = tmp_path / "base.tar"
    start.write_bytes(b"base weights")

    def key(*overrides):
        return SSLStage(compose_train(["experiment=ssl_20pct", *overrides]), start).key()

    reference, with_mapping = key(), key("ssl_stage.model.use_mapping_network=true")
    assert key("data.num_workers=7", "data.pin_memory=true", "model.mapping_network.hidden_dim=64") == reference
    assert len({reference, with_mapping, key("data.split_seed=1"), key("model.identity_encoder.feature_grid=2")}) == 4
    assert key("ssl_stage.model.use_mapping_network=true", "model.mapping_network.hidden_dim=64") != with_mapping


def test_ssl_encoder_is_exactly_what_mica_starts_from(tmp_path, toy_model):
    """Stage 1's encoder, saved in MICA's layout, is bit-identical to stage 2's starting encoder."""
    from functools import partial

    from faceregen.encoders.checkpoints import save_mica_checkpoint
    from faceregen.encoders.identity_encoder import build_identity_encoder
    from faceregen.encoders.mapping_network import MappingNetwork
    from lightning_modules.mica_module import MICAModule
    from lightning_modules.swav_module import SwAVModule

    torch.manual_seed(0)
    swav = SwAVModule(build_identity_encoder("dlib_resnet", pretrained=None), n_prototypes=16)
    mapping = MappingNetwork(input_dim=128, output_dim=toy_model.n_components)
    path = save_mica_checkpoint(tmp_path / "ssl.tar", swav.encoder_state_dict()["identity_encoder"], mapping.state_dict())
    mica = MICAModule(
        build_identity_encoder("dlib_resnet", pretrained=None), partial(MappingNetwork), toy_model,
        {"face": 150.0}, partial(torch.optim.Adam), base_checkpoint=str(path),
    )
    for (name, a), b in zip(swav.identity_encoder.backbone.state_dict().items(), mica.identity_encoder.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(mapping.state_dict().values(), mica.mapping_network.state_dict().values()):
        assert torch.equal(a, b)


def test_ssl_setting_runs_all_stages_end_to_end(tmp_path):
    """base stage -> SwAV stage (and its encoder's read-out statistics on the complete faces) -> MICA
    fine-tuning -> test, writing metrics.json; a second run (another seed) reuses both stages and the
    statistics from the cache without computing them again."""
    import json

    from faceregen.encoders.readout import ReadoutStatistics
    from training.base_stage import BaseStage, statistics_name
    from training.runner import run
    from training.ssl_stage import SSLStage

    cfg = tiny(compose_train(["experiment=ssl_20pct"]), tmp_path)
    result = run(cfg)
    assert result is not None and result > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["test/mean_distance_mm"] > 0
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert Path(stages["start_checkpoint"]).name == "mica_ssl.tar" and Path(stages["base_stage_dir"]).is_dir()
    assert len(list((tmp_path / "cache" / "base_model").glob("*/mica_base.tar"))) == 1
    # the base stage's read-out statistics: its train and validation images, 6 + 2 of 10 identities x 2 lights,
    # and their mirror images (flip averaging), at each of the 5 chip scales (scale averaging)
    assert len(cfg.model.chip_scales) == 5
    base_statistics = ReadoutStatistics.load(BaseStage(cfg).statistics_path())
    assert base_statistics.count == 32 * 5
    assert len(list((tmp_path / "cache" / "ssl_stage").glob("*/mica_ssl.tar"))) == 1
    # and the SwAV encoder's on the same images: the same heads' codes, other features
    ssl_statistics = ReadoutStatistics.load(next((tmp_path / "cache" / "ssl_stage").glob(f"*/{statistics_name(cfg)}")))
    assert ssl_statistics.count == 32 * 5
    np.testing.assert_allclose(ssl_statistics.code_mean, base_statistics.code_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ssl_statistics.cross_scatter.shape, base_statistics.cross_scatter.shape)
    assert np.abs(ssl_statistics.feature_mean - base_statistics.feature_mean).max() > 1e-3
    swav_history = json.loads(next((tmp_path / "cache" / "ssl_stage").glob("*/metrics.json")).read_text())["history"]
    assert "ssl/loss_epoch" in swav_history[-1] or "ssl/loss" in swav_history[-1]

    def retrained(stage, folder, checkpoint):
        raise AssertionError(f"{type(stage).__name__} trained again into {folder}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseStage, "train", retrained)
        patch.setattr(SSLStage, "train", retrained)
        patch.setattr("training.base_stage.complete_face_statistics", lambda *a: pytest.fail("statistics recomputed"))
        again = tiny(compose_train(["experiment=ssl_20pct", "seed=1"]), tmp_path)
        with open_dict(again):
            again.paths.output_dir = str(tmp_path / "run_seed1")
        assert run(again) is not None
    assert json.loads((tmp_path / "run_seed1" / "stages.json").read_text())["start_checkpoint"] == stages["start_checkpoint"]
