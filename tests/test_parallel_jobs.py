"""Jobs that run at once on the same data/ and cache/: one builds each shared artefact, the others wait and
reuse it; a killed builder blocks nobody and leaves nothing taken for complete; cache keys hold what decides
a stage and not this machine's folders."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from omegaconf import open_dict

from test_experiments import ROOT, compose_train

from faceregen.locking import build_lock, lock_file


def held_by_another(target: Path) -> bool:
    try:
        FileLock(lock_file(target)).acquire(timeout=0).lock.release()
        return False
    except Timeout:
        return True


def test_a_killed_holder_releases_the_lock(tmp_path):
    """kill -9 while holding a build lock: the kernel drops it, the next job takes it at once."""
    target = tmp_path / "dataset"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from faceregen.locking import build_lock\nwith build_lock({str(target)!r}):\n"
         "    print('held', flush=True)\n    import time; time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert held_by_another(target)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not held_by_another(target)
    with build_lock(target):
        assert lock_file(target) == tmp_path / ".dataset.lock"


def test_cached_stage_is_built_once_while_a_second_job_waits(tmp_path):
    """Two jobs ask for the same stage: the second waits for the first's build and does not build again."""
    from training.cached_stage import cached_stage

    folder, builds, started = tmp_path / "stage", [], threading.Event()

    def build(name: str):
        def write():
            builds.append(name)
            started.set()
            time.sleep(0.5)
            folder.mkdir(exist_ok=True)
            (folder / "stage.tar").write_bytes(name.encode())
        return write

    first = threading.Thread(target=cached_stage, args=(folder, folder / "stage.tar", build("first")))
    first.start()
    started.wait(10)
    cached_stage(folder, folder / "stage.tar", build("second"))
    first.join()
    assert builds == ["first"] and (folder / "stage.tar").read_bytes() == b"first"


def test_cached_stage_clears_what_an_unfinished_build_left(tmp_path):
    from training.cached_stage import cached_stage

    folder = tmp_path / "stage"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "epoch_000.ckpt").write_bytes(b"from a killed build")
    (folder / "metrics.json").write_text('{"history": [')

    def build():
        assert not folder.exists()
        folder.mkdir()
        (folder / "stage.tar").write_bytes(b"complete")

    assert cached_stage(folder, folder / "stage.tar", build).read_bytes() == b"complete"
    assert sorted(p.name for p in folder.iterdir()) == ["stage.tar"]


def test_base_stage_key_has_its_own_seed_and_no_machine_paths(monkeypatch):
    """Run seeds share one base model (trained with base_stage.seed); base_stage.seed changes it; the same
    project under another folder (moved, copied, another machine) keeps its key."""
    from training.base_stage import BaseStage
    from training.ssl_stage import SSLStage

    monkeypatch.setenv("PROJECT_ROOT", str(ROOT))
    keys = {seed: BaseStage(compose_train([f"seed={seed}"])).key() for seed in (0, 1)}
    assert keys[0] == keys[1] != BaseStage(compose_train(["base_stage.seed=1"])).key()
    start = ROOT / "pyproject.toml"  # any file: its bytes are in the SwAV stage's key
    ssl = SSLStage(compose_train(["experiment=ssl_20pct"]), start).key()
    assert ssl != SSLStage(compose_train(["experiment=ssl_20pct", "ssl_stage.seed=1"]), start).key()

    monkeypatch.setenv("PROJECT_ROOT", "/elsewhere/faceregen")
    moved = compose_train()
    assert moved.base_stage.generator.root == "/elsewhere/faceregen/data/synthetic_complete_faces"
    assert BaseStage(moved).key() == keys[0]
    assert SSLStage(compose_train(["experiment=ssl_20pct"]), start).key() == ssl


def test_base_model_is_the_same_whichever_run_seed_builds_it(tmp_path):
    """The base stage seeds itself (base_stage.seed): built after seeding the run with 0 or with 1, the
    weights are identical, so the model a sweep shares does not depend on which job came first."""
    import pytorch_lightning as pl
    import torch

    from training.base_stage import BaseStage
    from test_experiments import tiny

    weights = []
    for seed in (0, 1):
        cfg = tiny(compose_train(["experiment=transfer", f"seed={seed}"]), tmp_path / f"seed{seed}")
        with open_dict(cfg):
            cfg.base_stage.generator.root = str(tmp_path / "complete")  # one dataset, two base-stage caches
        pl.seed_everything(seed)
        weights.append(torch.load(BaseStage(cfg).checkpoint(), weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    for part in weights[0]:
        for name, tensor in weights[0][part].items():
            assert torch.equal(tensor, weights[1][part][name]), (part, name)


@pytest.mark.parametrize("launcher, target", [("joblib", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher"),
                                              ("submitit_local", "LocalLauncher")])
def test_parallel_launchers_compose(launcher, target):
    """The optional extra's launchers (their plugins' own configs) compose with train.yaml."""
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    cfg = compose_train([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(f".{target}")


def tiny_overrides(tmp_path: Path) -> list[str]:
    """train.py overrides for seconds-long jobs under ``tmp_path``: the toy face model (a config group option
    written there), 10 identities, 96 px, 2 batches per epoch, CSV logs only."""
    conf = tmp_path / "conf_toy" / "face_model"
    conf.mkdir(parents=True)
    (conf / "toy.yaml").write_text("_target_: face_models.toy_face_model\nsubdivisions: 3\n")
    generator = ["n_identities=10", "wounds_per_identity=1", "resolution=96", "workers=1", "contact_sheet_samples=0",
                 "lights=[[0.0,0.0,1.0],[0.3,0.3,0.9]]"]
    return [
        f"hydra.searchpath=[file://{tmp_path / 'conf_toy'}]", "face_model=toy",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}",
        *(f"generator.{g}" for g in generator), *(f"base_stage.generator.{g}" for g in generator),
        "base_stage.max_epochs=1", "data.batch_size=4", "data.num_workers=0", "data.preprocess_workers=1",
        "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1",
        "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false", "logger=csv",
        "~callbacks.reconstruction_samples",
    ]


def train_cli(overrides: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # builds data and models from nothing
def test_two_job_joblib_sweep_on_an_empty_cache_builds_everything_once(tmp_path):
    """`-m hydra/launcher=joblib` with 2 parallel jobs (seeds 0, 1) on empty data/ and cache/: both finish,
    from one base model, one dataset each, one preprocessing cache each, no temporary file left."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    job = train_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
                     "experiment=transfer", "seed=0,1", "trainer.max_epochs=1", *tiny_overrides(tmp_path)])
    output, _ = job.communicate(timeout=1200)
    print(f"2-job sweep: {time.monotonic() - started:.0f} s")
    assert job.returncode == 0, output[-4000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0_transfer_seed0", "1_transfer_seed1"]
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["test"]["test/mean_distance_mm"] > 0
    stages = [json.loads((run / "stages.json").read_text()) for run in runs]
    assert stages[0]["start_checkpoint"] == stages[1]["start_checkpoint"]
    assert [p.parent.name for p in (tmp_path / "cache" / "base_model").glob("*/mica_base.tar")] == [
        Path(stages[0]["base_stage_dir"]).name]
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(".")) == [
        "synthetic_cir3dfair", "synthetic_complete_faces"]
    for dataset in (tmp_path / "data").glob("synthetic_*"):
        assert (dataset / "manifest.json").is_file() and not (dataset / ".generate_params.json").exists()
    assert len(list((tmp_path / "cache" / "cir3dfair").glob("*/meta.json"))) == 2  # complete and imperfect faces
    assert not [p for p in tmp_path.rglob(".*.tmp*")]
