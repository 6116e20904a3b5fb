"""FileSink: daily and size rotation and retention, with a controlled clock."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest

from plugins.builtin.trafficlog.filesink import FileSink, file_name
from plugins.builtin.trafficlog.record import json_line
from tests.plugins.builtin.trafficlog.support import FakeClock


def rec(i: int) -> dict[str, object]:
    return {"id": f"f-{i:04d}", "path": f"/r/{i}"}


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_file_names() -> None:
    day = dt.date(2026, 11, 22)
    assert file_name(day) == "traffic-2026-11-22.log"
    assert file_name(day, 1) == "traffic-2026-11-22.1.log"
    assert file_name(day, 12) == "traffic-2026-11-22.12.log"
    assert file_name(day, 0, worker=0) == "traffic-2026-11-22.w0.log"
    assert file_name(day, 3, worker=1) == "traffic-2026-11-22.w1.3.log"


def test_two_workers_sharing_a_directory_each_write_their_own_files(tmp_path: Path) -> None:
    """Two worker processes' sinks on one directory: each file has one writer,
    stays under the limit, and never changes once the next one started."""
    line = len(json_line(rec(100)))  # records 100 .. 119: lines of one length
    clock = FakeClock()
    sinks = [FileSink(str(tmp_path), max_bytes=3 * line, clock=clock, worker=w) for w in (0, 1)]
    for sink in sinks:
        sink.open()
    finished: dict[str, bytes] = {}
    for i in range(20):  # interleaved, as two processes write
        sink = sinks[i % 2]
        before = sink.path
        sink.write([rec(100 + i)])
        if before is not None and sink.path != before:
            finished[before] = Path(before).read_bytes()
        for path, content in finished.items():
            assert Path(path).read_bytes() == content, f"{path} changed after it was finished"
    for sink in sinks:
        sink.close()
    files = names(tmp_path)
    assert files == sorted(
        [f"traffic-2026-11-22.w{w}{f'.{n}' if n else ''}.log" for w in (0, 1) for n in range(4)]
    )
    for name in files:
        assert (tmp_path / name).stat().st_size <= 3 * line, name
        worker = int(name.split(".w")[1][0])
        assert {int(i[2:]) % 2 for i in ids(tmp_path / name)} == {worker}, name
    # A restarted worker continues its own last file, not the other's.
    again = FileSink(str(tmp_path), max_bytes=3 * line, clock=clock, worker=1)
    again.open()
    again.write([rec(99)])
    assert again.path == str(tmp_path / "traffic-2026-11-22.w1.3.log")
    again.close()


def test_daily_rotation_follows_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 22, 23, 59, 30, tzinfo=dt.UTC))
    sink = FileSink(str(tmp_path), clock=clock)
    sink.open()
    sink.write([rec(1), rec(2)])
    clock.advance(seconds=45)  # past midnight UTC
    sink.write([rec(3)])
    # A clock in another zone: the date is still the UTC one.
    clock.now = dt.datetime(2026, 11, 24, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    sink.write([rec(4)])
    sink.close()
    assert names(tmp_path) == ["traffic-2026-11-22.log", "traffic-2026-11-23.log"]
    assert ids(tmp_path / "traffic-2026-11-22.log") == ["f-0001", "f-0002"]
    assert ids(tmp_path / "traffic-2026-11-23.log") == ["f-0003", "f-0004"]


def test_size_rotation_numbers_files_and_keeps_them_under_the_limit(tmp_path: Path) -> None:
    line = len(json_line(rec(1)))
    sink = FileSink(str(tmp_path), max_bytes=3 * line, clock=FakeClock())
    sink.open()
    sink.write([rec(i) for i in range(7)])  # one batch over three files
    sink.write([rec(7)])
    sink.write([rec(8), rec(9)])
    assert sink.path == str(tmp_path / "traffic-2026-11-22.3.log")
    sink.close()
    files = [
        "traffic-2026-11-22.log",
        "traffic-2026-11-22.1.log",
        "traffic-2026-11-22.2.log",
        "traffic-2026-11-22.3.log",
    ]
    assert names(tmp_path) == sorted(files)
    got = [i for name in files for i in ids(tmp_path / name)]
    assert got == [f"f-{i:04d}" for i in range(10)]
    assert [len(ids(tmp_path / n)) for n in files] == [3, 3, 3, 1]
    assert all((tmp_path / n).stat().st_size <= 3 * line for n in files)


def test_a_record_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), max_bytes=10, clock=FakeClock())
    sink.open()
    sink.write([rec(1), rec(2)])
    sink.close()
    assert names(tmp_path) == ["traffic-2026-11-22.1.log", "traffic-2026-11-22.log"]


def test_restart_continues_the_days_last_file(tmp_path: Path) -> None:
    line = len(json_line(rec(1)))
    clock = FakeClock()
    first = FileSink(str(tmp_path), max_bytes=2 * line, clock=clock)
    first.open()
    first.write([rec(1), rec(2), rec(3)])
    first.close()
    second = FileSink(str(tmp_path), max_bytes=2 * line, clock=clock)
    second.open()
    second.write([rec(4), rec(5)])
    second.close()
    assert ids(tmp_path / "traffic-2026-11-22.1.log") == ["f-0003", "f-0004"]
    assert ids(tmp_path / "traffic-2026-11-22.2.log") == ["f-0005"]


def test_size_rotation_off(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), max_bytes=0, clock=FakeClock())
    sink.open()
    for i in range(50):
        sink.write([rec(i)])
    sink.close()
    assert names(tmp_path) == ["traffic-2026-11-22.log"]


def test_retention_deletes_only_old_files_of_ours(tmp_path: Path) -> None:
    def touch(name: str) -> None:
        (tmp_path / name).write_text("{}\n")

    ours = [
        "traffic-2026-11-01.log",
        "traffic-2026-11-14.log",
        "traffic-2026-11-14.1.log",
        "traffic-2026-11-15.log",
        "traffic-2026-11-15.3.log",
        "traffic-2026-11-21.log",
    ]
    others = [
        "traffic.log",
        "traffic-2026-11-01.log.gz",
        "traffic-2026-11-01.0.log",
        "traffic-2026-13-45.log",
        "access-2026-11-01.log",
        "notes.txt",
    ]
    for name in ours + others:
        touch(name)
    (tmp_path / "traffic-2026-11-02.log.d").mkdir()
    clock = FakeClock(dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC))
    sink = FileSink(str(tmp_path), retention_days=7, clock=clock)
    sink.open()  # cleanup at start: keep the 15th .. the 22nd
    assert sorted(sink.deleted) == [
        "traffic-2026-11-01.log",
        "traffic-2026-11-14.1.log",
        "traffic-2026-11-14.log",
    ]
    sink.write([rec(1)])
    clock.advance(days=1)  # the day changes: the 15th goes too
    sink.write([rec(2)])
    sink.close()
    assert sorted(sink.deleted)[-2:] == ["traffic-2026-11-15.3.log", "traffic-2026-11-15.log"]
    assert names(tmp_path) == sorted(
        [
            *others,
            "traffic-2026-11-02.log.d",
            "traffic-2026-11-21.log",
            "traffic-2026-11-22.log",
            "traffic-2026-11-23.log",
        ]
    )


def test_retention_deletes_every_worker_s_old_files(tmp_path: Path) -> None:
    old = ["traffic-2026-11-01.w0.log", "traffic-2026-11-01.w1.2.log"]
    kept = ["traffic-2026-11-21.w1.log", "traffic-2026-11-01.w01.log", "traffic-2026-11-01.w.log"]
    for name in old + kept:
        (tmp_path / name).write_text("{}\n")
    clock = FakeClock(dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC))
    sink = FileSink(str(tmp_path), retention_days=7, clock=clock, worker=0)
    sink.open()
    assert sorted(sink.deleted) == sorted(old)
    assert names(tmp_path) == sorted(kept)


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    (tmp_path / "traffic-2000-01-01.log").write_text("{}\n")
    sink = FileSink(str(tmp_path), retention_days=0, clock=FakeClock())
    sink.open()
    sink.write([rec(1)])
    sink.close()
    assert "traffic-2000-01-01.log" in names(tmp_path)


def test_configure_applies_from_the_next_write(tmp_path: Path) -> None:
    (tmp_path / "traffic-2026-11-20.log").write_text("{}\n")
    clock = FakeClock()
    sink = FileSink(str(tmp_path), max_bytes=0, retention_days=0, clock=clock)
    sink.open()
    sink.write([rec(1), rec(2)])
    sink.configure(max_bytes=1, retention_days=1)
    sink.write([rec(3)])
    clock.advance(days=1)
    sink.write([rec(4)])
    sink.close()
    assert names(tmp_path) == [
        "traffic-2026-11-22.1.log",
        "traffic-2026-11-22.log",
        "traffic-2026-11-23.log",
    ]


def test_a_failed_write_raises_and_the_next_one_recovers(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    sink = FileSink(str(directory), clock=FakeClock())
    sink.open()
    sink.write([rec(1)])
    sink.close()  # the file is reopened by the next write
    shutil.rmtree(directory)
    directory.write_text("not a directory")
    with pytest.raises(OSError):
        sink.write([rec(2)])
    directory.unlink()
    sink.write([rec(3)])
    sink.close()
    assert ids(directory / "traffic-2026-11-22.log") == ["f-0003"]


def test_a_partial_last_line_is_terminated_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "traffic-2026-11-22.log"
    path.write_bytes(b'{"id":"f-0001"}\n{"id":"f-00')  # a write cut short (disk full)
    sink = FileSink(str(tmp_path), clock=FakeClock())
    sink.open()
    sink.write([rec(2)])
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"id":"f-0001"}'
    assert lines[1] == '{"id":"f-00'
    assert json.loads(lines[2])["id"] == "f-0002"
