"""``wdrec``, the command: how it ends (its subcommands are tested beside their modules)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
from paths import CONFIGS

from wdrec.cli import main

# What the exit handlers see: whether the collector was frozen before the interpreter's last pass.
REPORT_FREEZE = "import atexit, gc; atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0))"


def test_the_command_ends_without_a_last_collection_pass() -> None:
    script = f"{REPORT_FREEZE}; import sys; from wdrec.cli import main; sys.argv[0] = 'wdrec'; main()"
    done = subprocess.run([sys.executable, "-c", script, "fit", "--config", str(CONFIGS / "movielens100k-ctr.yaml"), "--help"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("frozen: True")


def test_a_caller_that_lives_on_keeps_its_collector(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--data" in capsys.readouterr().out
    assert gc.get_freeze_count() == 0
