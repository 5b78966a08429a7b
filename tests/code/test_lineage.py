"""The git commit recorded on runs: read even from a checkout that another user owns (CI, containers)."""

from __future__ import annotations

import os
import shutil

import pytest

from digitpipe.runtime import git_commit
from tests.gitcheckout import ROOT, checkout_head
from tests.helpers import run


def test_the_commit_of_this_checkout_is_its_head():
    assert git_commit(str(ROOT)) == checkout_head()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("git") is None, reason="needs root to hand a checkout over")
def test_a_checkout_owned_by_another_user_still_gives_its_commit(tmp_path):
    repo = tmp_path / "checkout"
    run(["git", "init", "-q", repo], check=True)
    run(["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one"],
        check=True)
    run(["chown", "-R", "nobody", repo], check=True)
    plain = run(["git", "-C", repo, "rev-parse", "HEAD"])
    assert "dubious ownership" in plain.err  # what git says there without the fix
    assert git_commit(str(repo)) == checkout_head(repo) and len(checkout_head(repo)) == 40


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert git_commit(str(tmp_path)) == "unknown"
