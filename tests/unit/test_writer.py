"""render/writer.py: what compare calls created, changed, identical and removed (which generate prints
and --dry-run lists) and what write leaves behind, on an output folder holding odd things; and what
sourcetree.tree reads of deploystack's own folders into build contexts. The code before the speed work
(Path.rglob) passed these same tests."""

from __future__ import annotations

import os
from pathlib import Path

from deploystack.render.sourcetree import FileData, tree
from deploystack.render.writer import compare, differs, write


def put(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def test_differs_compares_bytes_and_mode_or_bytes_only(tmp_path: Path) -> None:
    """compare's question (bytes and mode) and reload's (bytes only: what the container reads), one helper."""
    put(tmp_path / "f", "same\n", 0o644)
    os.mkfifo(tmp_path / "fifo")  # not a file: as missing, and never opened
    assert differs(str(tmp_path / "missing"), FileData(b"x")) is None
    assert differs(str(tmp_path / "fifo"), FileData(b"x"), mode=False) is None
    assert differs(str(tmp_path / "f"), FileData(b"same\n", 0o644)) is False
    assert differs(str(tmp_path / "f"), FileData(b"same\n", 0o600)) is True
    assert differs(str(tmp_path / "f"), FileData(b"same\n", 0o600), mode=False) is False
    assert differs(str(tmp_path / "f"), FileData(b"other\n", 0o644), mode=False) is True


def test_compare_sorts_every_file_into_one_kind_and_write_converges(tmp_path: Path) -> None:
    out = tmp_path / "stack"
    put(out / "compose.yaml", "same\n")
    put(out / "config/lbc/nginx.conf", "old\n")
    put(out / ".env", "A=1\n", 0o644)  # the wanted mode is 0600: changed by its mode alone
    (out / "config/a-folder").mkdir(parents=True)  # a folder where a file is wanted: created
    put(out / "config/a-file", "in the way\n")  # a file where a folder is wanted: removed, and x created
    os.mkfifo(out / "config/fifo")  # not a file: wanted there, so created (and never opened)
    put(out / "build/a/b", "stray\n")
    put(out / "build/a-c", "stray\n")
    put(out / "build/deep/er/x", "stray\n")
    put(tmp_path / "elsewhere/kept", "not ours\n")
    (out / "build/link-to-file").symlink_to(tmp_path / "elsewhere/kept")
    (out / "build/link-to-folder").symlink_to(tmp_path / "elsewhere")  # removed itself, never followed
    (out / "build/dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(out / "build/pipe")  # neither a file nor a link: compare leaves it alone
    put(out / "notes.txt", "outside the managed folders\n")
    files = {
        "compose.yaml": FileData(b"same\n"),
        "config/lbc/nginx.conf": FileData(b"new\n"),
        ".env": FileData(b"A=1\n", 0o600),
        "config/a-folder": FileData(b"x\n"),
        "config/a-file/x": FileData(b"x\n"),
        "config/fifo": FileData(b"x\n"),
        "config/new.conf": FileData(b"x\n"),
    }

    changes = compare(files, out)

    assert changes.identical == ["compose.yaml"]
    assert changes.changed == [".env", "config/lbc/nginx.conf"]
    assert changes.created == ["config/a-file/x", "config/a-folder", "config/fifo", "config/new.conf"]
    assert changes.removed == ["build/a/b", "build/a-c", "build/dangling", "build/deep/er/x", "build/link-to-file",
                               "build/link-to-folder", "config/a-file"]


def test_write_removes_what_is_gone_and_the_folders_it_empties(tmp_path: Path) -> None:
    out = tmp_path / "stack"
    put(out / "build/app/deep/er/old.txt", "stray\n")
    put(out / "build/app/keep.txt", "kept\n")
    (out / "build/app/empty/empty").mkdir(parents=True)
    put(out / "config/lbc/old.conf", "stray\n")
    files = {"build/app/keep.txt": FileData(b"kept\n"), "compose.yaml": FileData(b"x\n")}

    write(files, out, compare(files, out))

    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == ["build", "build/app", "build/app/keep.txt", "compose.yaml", "config"]
    assert compare(files, out).identical == ["build/app/keep.txt", "compose.yaml"]


def test_own_folders_are_read_whole_but_caches_and_linked_folders(tmp_path: Path) -> None:
    """sourcetree.tree, which reads compose/ and the package into build contexts: what it takes decides
    image tags, so a file more or less would rebuild images for nothing."""
    root = tmp_path / "own"
    put(root / "a/x.py", "1")
    put(root / "a/__pycache__/x.cpython-311.pyc", "2")
    put(root / "a/y.pyc", "3")
    put(root / "a.pyc/inside", "4")
    put(root / "b/_data/z", "5")
    put(root / "b/k", "6", 0o600)
    put(root / "a-b", "7", 0o755)
    (root / "c").mkdir()
    (root / "c/linked-folder").symlink_to(root / "a")
    (root / "c/linked-file").symlink_to(root / "b/k")
    (root / "c/dangling").symlink_to(root / "nothing")
    os.mkfifo(root / "c/fifo")

    files = tree(root, "ctx")

    assert list(files) == ["ctx/a/x.py", "ctx/a-b", "ctx/b/k", "ctx/c/linked-file"]  # in path order
    assert [(f.data, f.mode) for f in files.values()] == [(b"1", 0o644), (b"7", 0o755), (b"6", 0o600), (b"6", 0o600)]
