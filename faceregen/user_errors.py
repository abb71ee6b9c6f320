"""A user's mistake (a missing folder, a bad checkpoint or image, a bad value) as one clear message.

Hydra prints a traceback above any error a job raises. :class:`ReportUserErrors`, a Hydra job callback
(``conf/hydra/default.yaml``, so every entry point has it), turns the errors that name a bad input or
setting (:data:`USER_ERRORS`) into a compact Hydra error: the message alone, exit status 1. With
``HYDRA_FULL_ERROR=1`` it leaves them alone and Hydra shows the whole traceback.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback

#: what the project raises, with a message naming the file or value and what was expected, for bad input
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserError(CompactHydraException):
    """Hydra prints a compact error's message without a traceback."""


class ReportUserErrors(Callback):
    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or os.environ.get("HYDRA_FULL_ERROR") == "1":
            return
        error = job_return._return_value  # the raised exception (the public getter re-raises it)
        if isinstance(error, USER_ERRORS):
            job_return.return_value = UserError(f"{type(error).__name__}: {error}")
