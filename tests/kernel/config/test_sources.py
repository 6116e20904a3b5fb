"""Reading files: syntax errors, includes, merge rules, and where values came from."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kernel.config import sources
from kernel.config.sources import Sources, label_for, read_sources


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read(tmp_path: Path, text: str) -> Sources:
    return read_sources(text, main=None, base_dir=tmp_path, source="<test>")


def test_plain_document(tmp_path: Path) -> None:
    got = read(tmp_path, 'a = 1\n[t]\nb = "x"\n[[arr]]\nc = true\n')
    assert got.problems == []
    assert got.data == {"a": 1, "t": {"b": "x"}, "arr": [{"c": True}]}
    assert type(got.data["a"]) is int
    assert type(got.data["t"]) is dict
    assert got.files == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x = 1 2", "$: TOML syntax error: line 1 column 7: unexpected character: '2'"),
        ("a = 1\na = 2", '$: TOML syntax error: line 2 column 1: key "a" already exists'),
        ("a = ", "$: TOML syntax error: line 1 column 1: unexpected end of input"),
        ('[x]\nb = "open', "$: TOML syntax error: line 2 column 1: unexpected end of file"),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, problem: str) -> None:
    assert read(tmp_path, text).problems == [problem]


def test_merge_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.toml",
        """
        top = "base"
        list = [1, 2]
        clear = [{ a = 1 }]
        inline = [{ n = "b1" }]
        [t]
        keep = 1
        over = 1
        [t.deep]
        x = 1
        [[arr]]
        n = "b1"
        [[arr]]
        n = "b2"
        """,
    )
    got = read(
        tmp_path,
        """
        include = "base.toml"
        top = "main"
        list = [3]
        clear = []
        inline = [{ n = "m1" }]
        [t]
        over = 2
        [t.deep]
        y = 2
        [[arr]]
        n = "m1"
        """,
    )
    assert got.problems == []
    assert got.data == {
        "top": "main",
        "list": [3],  # arrays of scalars replace
        "clear": [],  # an empty array replaces too
        "inline": [{"n": "b1"}, {"n": "m1"}],  # arrays of tables concatenate, inline or not
        "t": {"keep": 1, "over": 2, "deep": {"x": 1, "y": 2}},  # tables deep-merge
        "arr": [{"n": "b1"}, {"n": "b2"}, {"n": "m1"}],
    }
    assert got.files == ((tmp_path / "base.toml").resolve(),)


def test_include_order_nesting_and_relative_paths(tmp_path: Path) -> None:
    write(tmp_path, "conf/a.toml", 'include = "sub/c.toml"\nv = "a"\n[[r]]\nn = "a"\n')
    write(tmp_path, "conf/sub/c.toml", 'v = "c"\nonly_c = 1\n[[r]]\nn = "c"\n')
    write(tmp_path, "conf/b.toml", 'v = "b"\n[[r]]\nn = "b"\n')
    main = write(tmp_path, "conf/main.toml", 'include = ["a.toml", "b.toml"]\n[[r]]\nn = "m"\n')
    got = read_sources(None, main=main, base_dir=main.parent, source=str(main))
    assert got.problems == []
    assert got.data == {
        "v": "b",
        "only_c": 1,
        "r": [{"n": "c"}, {"n": "a"}, {"n": "b"}, {"n": "m"}],
    }
    names = [p.relative_to(tmp_path).as_posix() for p in got.files]
    assert names == ["conf/main.toml", "conf/a.toml", "conf/sub/c.toml", "conf/b.toml"]


def test_origins(tmp_path: Path) -> None:
    write(tmp_path, "inc/base.toml", '[s]\na = 1\nb = 1\n[[r]]\nn = "x"\n')
    got = read(tmp_path, 'include = "inc/base.toml"\n[s]\nb = 2\n[[r]]\nn = "y"\n')
    o = got.origins
    assert label_for(o, ("s", "a")) == "in inc/base.toml"
    assert label_for(o, ("s", "b")) is None
    assert label_for(o, ("s", "missing")) == "in inc/base.toml"  # the table's file
    assert label_for(o, ("r", 0, "n")) == "in inc/base.toml"
    assert label_for(o, ("r", 1, "other")) is None
    assert label_for(o, ("nowhere",)) is None


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'include = "b.toml"\n')
    write(tmp_path, "b.toml", 'include = "a.toml"\nx = 1\n')
    main = write(tmp_path, "main.toml", 'include = "a.toml"\n')
    got = read_sources(None, main=main, base_dir=tmp_path, source="main.toml")
    assert got.problems == [
        "$.include: include cycle: main.toml -> a.toml -> b.toml -> a.toml (in b.toml)"
    ]


def test_self_include(tmp_path: Path) -> None:
    main = write(tmp_path, "main.toml", 'include = "./main.toml"\n')
    got = read_sources(None, main=main, base_dir=tmp_path, source=str(main))
    assert got.problems == ["$.include: include cycle: main.toml -> main.toml"]


def test_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "common.toml", "[t]\nx = 1\n")
    write(tmp_path, "a.toml", 'include = "common.toml"\n')
    write(tmp_path, "b.toml", 'include = "common.toml"\n')
    got = read(tmp_path, 'include = ["a.toml", "b.toml"]\n')
    assert got.problems == []
    assert got.data == {"t": {"x": 1}}
    assert [p.name for p in got.files] == ["a.toml", "common.toml", "b.toml"]


def test_problems_in_included_files_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "bad.toml", "x = = 1\n")
    write(tmp_path, "wrong.toml", "include = 5\n")
    write(tmp_path, "latin1.toml", "")
    (tmp_path / "latin1.toml").write_bytes(b'x = "\xe9"\n')
    got = read(tmp_path, 'include = ["bad.toml", "gone.toml", "wrong.toml", "latin1.toml"]\n')
    assert got.problems == [
        "$: TOML syntax error: line 1 column 5: unexpected character: '=' (in bad.toml)",
        "$.include: cannot read gone.toml: No such file or directory",
        "$.include: must be a file name or an array of file names, got 5 (in wrong.toml)",
        "$.include: cannot read latin1.toml: not UTF-8 text (invalid continuation byte)",
    ]
    # Files that could not be read are still watched: fixing them should reload.
    assert [p.name for p in got.files] == ["bad.toml", "gone.toml", "wrong.toml", "latin1.toml"]


def test_missing_main_file(tmp_path: Path) -> None:
    main = tmp_path / "nope.toml"
    got = read_sources(None, main=main, base_dir=tmp_path, source="conf/nope.toml")
    assert got.problems == ["$: cannot read conf/nope.toml: No such file or directory"]
    assert got.files == (main,)


def test_include_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    got = read(tmp_path, 'include = "d"\n')
    assert got.problems == ["$.include: cannot read d: Is a directory"]


def test_a_device_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    """``include = "/dev/zero"`` read zeros until memory ran out."""
    got = read(tmp_path, 'include = "/dev/zero"\n')
    assert got.problems == ["$.include: cannot read /dev/zero: a device, not a file"]


def test_a_file_over_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_CONFIG_BYTES", 2**20)
    write(tmp_path, "big.toml", "#" * 2**20 + "\n")
    write(tmp_path, "fits.toml", "a = 1\n" + "#" * (2**20 - 7) + "\n")
    got = read(tmp_path, 'include = ["big.toml", "fits.toml"]\n')
    assert got.problems == ["$.include: cannot read big.toml: larger than 1 MiB"]
    assert got.data == {"a": 1}


def test_a_pipe_is_read_to_its_end(tmp_path: Path) -> None:
    """``kernel check -c <(envsubst < t.toml)`` names a pipe, not a file."""
    fifo = tmp_path / "conf.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("a = 1\r\nb = 2\n",))
    writer.start()
    got = read_sources(None, main=fifo, base_dir=tmp_path, source=str(fifo))
    writer.join()
    assert got.problems == []
    assert got.data == {"a": 1, "b": 2}


def test_a_file_outside_the_main_directory_is_named_whole(tmp_path: Path) -> None:
    """It was named relative to the main file's directory: ``../../etc/x.toml``."""
    (tmp_path / "conf").mkdir()
    gone = tmp_path / "elsewhere" / "gone.toml"
    got = read_sources(
        f'include = ["{gone}", "sub/gone.toml"]\n',
        main=None,
        base_dir=tmp_path / "conf",
        source="<test>",
    )
    assert got.problems == [
        f"$.include: cannot read {gone}: No such file or directory",
        "$.include: cannot read sub/gone.toml: No such file or directory",
    ]


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    """It read as "TOML syntax error: line 1 column 1: empty key"."""
    write(tmp_path, "inc.toml", "\ufeffb = 2\n")
    main = write(tmp_path, "main.toml", '\ufeffinclude = ["inc.toml"]\na = 1\n')
    got = read_sources(None, main=main, base_dir=tmp_path, source="main.toml")
    assert got.problems == []
    assert got.data == {"a": 1, "b": 2}


def test_files_are_listed_as_named_not_resolved(tmp_path: Path) -> None:
    # A ConfigMap-style mount: the watcher needs the symlinks, not their targets.
    write(tmp_path, "..v1/secrets.toml", 'include = "common.toml"\nv = "s"\n')
    write(tmp_path, "..v1/common.toml", "c = 1\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "secrets.toml").symlink_to("..data/secrets.toml")
    (tmp_path / "run.toml").symlink_to("..data/run.toml")
    write(tmp_path, "..v1/run.toml", 'include = "../secrets.toml"\n')
    main = tmp_path / "run.toml"
    got = read_sources(None, main=main, base_dir=main.resolve().parent, source="run.toml")
    assert got.problems == []
    assert got.data == {"v": "s", "c": 1}
    # Relative includes are still read from the directory the file really is in.
    assert got.files == (
        main,
        tmp_path / "..v1" / "../secrets.toml",
        tmp_path / "..v1" / "common.toml",
    )
