"""Running ``wdrec`` as users do, as a real process or in-process through the console
script's own entry point (``wdrec.cli.main``); importable as ``commands`` (tests/ is on the path)."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path

import pytest

# A real fit, cut to seconds: one epoch of 30 batches, no progress bar.
SHORT_FIT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=30", "--trainer.enable_progress_bar=false"]


def wdrec() -> list[str]:
    """The ``wdrec`` command of the interpreter running the tests."""
    script = shutil.which("wdrec", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "wdrec.cli"]


def main_in_process(argv: list[str], env: dict[str, str], folder: Path) -> tuple[int, str, str]:
    """``wdrec <argv>`` in this process, in ``folder`` with ``env`` set: exit status, stdout, stderr."""
    from wdrec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(folder)
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()
