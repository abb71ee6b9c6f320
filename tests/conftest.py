import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")


@pytest.fixture(scope="session")
def toy_model():
    from face_models import toy_face_model

    return toy_face_model(subdivisions=3)
