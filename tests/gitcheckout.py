"""What a test expects as the git commit of a checkout, read without git."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_head(root: Path = ROOT) -> str:
    """HEAD of the checkout at `root`, read from its .git folder without git; "unknown" outside a checkout."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: PATH"
        git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
    if not (git / "HEAD").is_file():
        return "unknown"
    head = (git / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head  # detached
    ref = head.removeprefix("ref: ")
    common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else Path(".")
    for folder in (git, (git / common).resolve()):
        if (folder / ref).is_file():
            return (folder / ref).read_text().strip()
        packed = folder / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(f" {ref}"):
                    return line.split()[0]
    return "unknown"
