"""Strict mode (`KITH_STRICT=1`, which `tests/run.sh` and so `.ci/run` set): a test that
finds something missing and would skip fails instead, and says what is missing."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

NEEDS_A_PROGRAM = '''
import shutil, pytest

def test_needs_a_program():
    if shutil.which("kith-no-such-program") is None:
        pytest.skip("needs the program kith-no-such-program (Debian package kith-nothing)")
'''


def run_pytest(tmp_path: Path, strict: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs.py").write_text(NEEDS_A_PROGRAM)
    env = {k: v for k, v in os.environ.items() if k != "KITH_STRICT"}
    if strict:
        env["KITH_STRICT"] = "1"
    # The project's conftest as a plugin: its hook is what is under test.
    env["PYTHONPATH"] = str(HERE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "--rootdir", str(tmp_path),
         "-o", "addopts=", str(tmp_path / "test_needs.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_in_strict_mode_and_names_what_is_missing(tmp_path):
    r = run_pytest(tmp_path, strict=True)
    assert r.returncode != 0, r.stdout
    assert "1 failed" in r.stdout, r.stdout
    assert "KITH_STRICT=1" in r.stdout, r.stdout
    assert "kith-no-such-program" in r.stdout, r.stdout


def test_without_strict_mode_the_same_test_is_skipped(tmp_path):
    r = run_pytest(tmp_path, strict=False)
    assert r.returncode == 0, r.stdout
    assert "1 skipped" in r.stdout, r.stdout
