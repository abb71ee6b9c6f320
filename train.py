"""Train (and test) a model: ``python train.py experiment=transfer``. All wiring is in ``conf/``."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from training.runner import run

# conf/paths' root (as rootutils does in lightning-hydra-template): a multirun resolves its sweep folder
# before Hydra's runtime values exist
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
