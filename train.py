"""Train (and test) a model: ``python train.py experiment=transfer``. All wiring is in ``conf/``."""

import hydra
from omegaconf import DictConfig

from lightning_modules.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
