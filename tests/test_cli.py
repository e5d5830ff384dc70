"""The CLI: help, errors that name the cause and the fix, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from microfit.cli import main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in ("run", "train", "prune", "quantize", "generate", "build", "emulate", "validate",
                 "report", "targets"):
        assert verb in out


@pytest.mark.parametrize("verb,maker", [("prune", "microfit train"),
                                        ("quantize", "microfit prune"),
                                        ("generate", "microfit quantize"),
                                        ("validate", "microfit quantize")])
def test_stage_on_empty_run_folder_names_the_missing_step(verb, maker, tmp_path, capsys):
    code = main([verb, str(tmp_path)])
    assert code == 2
    out = capsys.readouterr().out
    assert "missing" in out and maker in out


def test_targets_lists_the_default_board(capsys):
    assert main(["targets"]) == 0
    assert "qemu-mps2-an386" in capsys.readouterr().out


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "microfit.cli", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "microfit" in proc.stdout
