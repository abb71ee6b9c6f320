"""Generate the synthetic Cir3D-FaIR dataset: `python generate.py` (Hydra; see conf/generate.yaml)."""

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from faceregen.synthetic import generate_dataset

    face_model = hydra.utils.instantiate(cfg.face_model)
    manifest = generate_dataset(face_model=face_model, **OmegaConf.to_container(cfg.generator, resolve=True))
    print(f"dataset manifest: {manifest}")


if __name__ == "__main__":
    main()
