"""A user's mistake reaches the terminal as one message, not a traceback (HYDRA_FULL_ERROR=1 shows it)."""

import os
import subprocess
import sys

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException

from test_experiments import ROOT

from faceregen.user_errors import ReportUserErrors


def failed_job(error: Exception) -> JobReturn:
    job = JobReturn()
    job.status, job.return_value = JobStatus.FAILED, error
    return job


def test_user_errors_become_compact_and_other_errors_stay(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    job = failed_job(FileNotFoundError("/data/missing: no samples found"))
    ReportUserErrors().on_job_end(None, job)
    with pytest.raises(CompactHydraException, match="^FileNotFoundError: /data/missing: no samples found$"):
        job.return_value
    bug = failed_job(RuntimeError("shape mismatch"))
    ReportUserErrors().on_job_end(None, bug)
    with pytest.raises(RuntimeError):
        bug.return_value
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    full = failed_job(ValueError("seed=-1"))
    ReportUserErrors().on_job_end(None, full)
    with pytest.raises(ValueError):
        full.return_value


def test_cli_prints_one_message_for_a_missing_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, str(ROOT / "evaluate.py"), f"runs_dir={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"FileNotFoundError: {tmp_path / 'missing'}: log folder not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(command, cwd=ROOT, env={**env, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr
