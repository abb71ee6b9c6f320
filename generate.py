"""Generate the synthetic Cir3D-FaIR dataset: `python generate.py` (Hydra; see conf/generate.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    face_model = hydra.utils.instantiate(cfg.face_model)
    manifest = hydra.utils.instantiate(cfg.generator, _partial_=True, _convert_="all")(face_model=face_model)
    print(f"dataset manifest: {manifest}")


if __name__ == "__main__":
    main()
