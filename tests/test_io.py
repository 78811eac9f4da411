"""amlab.io's atomic writes: the whole file or the old one, never half; the mode a plain
open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from amlab.errors import AmlabError
from amlab.io import atomic_write, atomic_write_bytes, atomic_write_text, read_text


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "text")
        atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write("ne")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_read_text_gives_utf8_text_and_refuses_other_bytes(tmp_path):
    file = tmp_path / "words.txt"
    file.write_bytes("naïve 7\n".encode())
    assert read_text(file, "remedy") == "naïve 7\n"
    file.write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(AmlabError, match=r"words.txt is not UTF-8 text \(byte 3 is 0xff\); fix"):
        read_text(file, "fix")
    with pytest.raises(AmlabError, match="cannot read .*missing.txt.*; fix"):
        read_text(tmp_path / "missing.txt", "fix")
    with pytest.raises(AmlabError, match="not a regular file"):
        read_text(tmp_path, "fix")


def _write_graph(folder, bad):
    (folder / "edges.txt").write_text("0 1\n")
    (folder / "labels.txt").write_text("0\n1\n")
    (folder / "features.txt").write_bytes(b"1 2\n\xff 4\n" if bad else b"1 2\n3 4\n")
    return [folder / f"{name}.txt" for name in ("edges", "features", "labels")]


def _loaders():
    from amlab.data.fairness import load_labelled_csv
    from amlab.data.listops import read_tsv
    from amlab.tasks.gallery import read_prompts

    return {
        "listops tsv": (read_tsv, b"5\t[SM 2 3 ]\n", "tsv"),
        "gallery prompts": (read_prompts, b"a thick 7\n", "txt"),
        "fairness csv": (load_labelled_csv, b"text,label\nhello there,0\n", "csv"),
    }


@pytest.mark.parametrize("name", ["listops tsv", "gallery prompts", "fairness csv", "graph"])
def test_every_text_loader_refuses_bytes_that_are_not_utf8_by_name(tmp_path, name):
    """A non-UTF-8 file gives an AmlabError naming it, never a UnicodeDecodeError; the same
    file with good bytes loads (so the test would fail if the loader refused everything)."""
    if name == "graph":
        from amlab.data.graphs import load_graph

        assert load_graph(*_write_graph(tmp_path, bad=False)).features.shape == (2, 2)
        with pytest.raises(AmlabError, match="features.txt"):
            load_graph(*_write_graph(tmp_path, bad=True))
        return
    load, good, suffix = _loaders()[name]
    file = tmp_path / f"input.{suffix}"
    file.write_bytes(good)
    load(file)
    file.write_bytes(good[:-1] + b"\xff\n")
    with pytest.raises(AmlabError, match=r"input\.\w+ is not UTF-8 text"):
        load(file)
