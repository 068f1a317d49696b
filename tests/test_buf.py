"""proto/ is buf-lint clean (buf.yaml) and breaks no caller against the previous commit."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar import REPO

BUF = REPO / ".tools" / "bin" / "buf"  # make tools, from the Go module proxy

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is not installed: `make tools` builds it with go "
                                                          "(go not found when it ran)")


def buf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def copy_of_the_module(directory: Path) -> Path:
    shutil.copytree(REPO / "proto", directory / "proto")
    shutil.copy(REPO / "buf.yaml", directory / "buf.yaml")
    return directory / "proto" / "placecheck" / "v1"


def test_buf_lint_is_clean():
    linted = buf("lint")
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_buf_lint_finds_a_message_without_its_comment(tmp_path):
    placement = copy_of_the_module(tmp_path) / "placement.proto"
    text = placement.read_text()
    comment = "// PlacementCheck.CheckDestination's request: a workload and the hosts it may go to.\n"
    assert comment in text
    placement.write_text(text.replace(comment, ""))
    linted = buf("lint", cwd=tmp_path)
    assert linted.returncode != 0 and '"CheckDestinationRequest" should have a non-empty comment' in linted.stdout


def test_no_breaking_change_against_the_previous_commit():
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD~1"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("no previous commit (a shallow clone?)")
    checked = buf("breaking", "--against", ".git#ref=HEAD~1,subdir=proto")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_buf_breaking_finds_a_renumbered_field(tmp_path):
    placement = copy_of_the_module(tmp_path) / "placement.proto"
    placement.write_text(placement.read_text().replace("uint64 min_generation = 3;", "uint64 min_generation = 9;"))
    checked = buf("breaking", "--against", f"{REPO / '.git'}#ref=HEAD,subdir=proto", cwd=tmp_path)
    assert checked.returncode != 0
    assert 'Previously present field "3" with name "min_generation"' in checked.stdout
