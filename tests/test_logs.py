"""What a user sees: progress as plain periodic lines off a terminal (files, pod logs), a
tqdm bar on one, each step's summary once, and nothing but warnings and errors under -q."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from fauna import logs

# What a tqdm bar leaves in a file: carriage returns and block characters.
BAR_MARKS = ("\r", "█", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "it/s]")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(total: int | None, clock: Clock, **kw) -> logs.PlainProgress:
    log = logging.getLogger("fauna.steps.ingest")
    return logs.PlainProgress(None, total, "check", "img", log, clock=clock, **kw)


def test_a_line_per_tenth_with_count_rate_and_eta_then_a_closing_line(capsys) -> None:
    logs.configure()
    clock = Clock()
    with plain(100, clock) as bar:
        for _ in range(100):
            clock.now += 0.7
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10, lines  # 10%, 20%, ... 90%, then the closing line
    assert lines[0] == "[ingest] check: 10/100 img (10%), 1.43 img/s, 7 s elapsed, ETA 1 min 3 s"
    assert lines[4].startswith("[ingest] check: 50/100 img (50%), ") and "ETA 35 s" in lines[4]
    assert lines[-1] == "[ingest] check: 100/100 img in 1 min 10 s (1.43 img/s)"


def test_lines_are_at_least_min_gap_apart_and_at_most_max_gap(capsys) -> None:
    logs.configure()
    clock = Clock()
    with plain(100, clock) as fast:  # 10% a second: a line every MIN_GAP_S, not every 10%
        for _ in range(100):
            clock.now += 0.1
            fast.update()
    assert len(capsys.readouterr().err.splitlines()) == 2  # at 50%, and the closing line
    clock.now = 0.0
    slow = plain(None, clock, unit_scale=True)  # unknown total: every MAX_GAP_S
    for _ in range(95):
        clock.now += 1
        slow.update(2_500_000)
    slow.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[ingest] check: 75.0 Mimg, 2.5 Mimg/s, 30 s elapsed"
    assert len(lines) == 4 and lines[-1].startswith("[ingest] check: 237.5 Mimg in 1 min 35 s")


def test_short_work_shows_no_line_and_an_error_no_closing_line(capsys) -> None:
    logs.configure()
    clock = Clock()
    with plain(36, clock) as quick:
        clock.now += 1.0
        quick.update(36)  # done in 1 s: the step's summary says the count
    with pytest.raises(RuntimeError), plain(36, clock) as failed:
        clock.now += 60
        failed.update(5)
        raise RuntimeError("the error's own line says enough")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[ingest] check: 5/36 img (14%), 0.0833 img/s, 1 min 0 s elapsed, ETA 6 min 12 s"
    ]


def test_quiet_shows_warnings_only(capsys) -> None:
    logs.configure(-1)
    try:
        clock = Clock()
        with plain(10, clock) as bar:
            for _ in range(10):
                clock.now += 40
                bar.update()
        log = logging.getLogger("fauna.steps.split")
        log.info("a summary")
        log.warning("class 'cat' has 1 image(s): train only")
        logs.result({"top1": 1.0})
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == "[split] warning: class 'cat' has 1 image(s): train only\n"
    finally:
        logs.configure()


def test_a_terminal_gets_a_bar_and_a_file_gets_lines(monkeypatch, tmp_path: Path) -> None:
    logs.configure()
    log = logging.getLogger("fauna.steps.split")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 wide
    with open(follower, "w", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert sum(logs.progress(range(5), desc="records", unit="img", log=log)) == 10
        terminal.flush()
        drawn = b""
        while select.select([leader], [], [], 0.5)[0]:
            drawn += os.read(leader, 4096)
    os.close(leader)
    drawn = drawn.decode()
    assert "\r" in drawn and "[split] records: 100%" in drawn and "5/5" in drawn
    with open(tmp_path / "log", "w") as file:
        monkeypatch.setattr(sys, "stderr", file)
        bar = logs.progress(range(5), desc="records", unit="img", log=log)
        assert isinstance(bar, logs.PlainProgress) and bar.total == 5
        logs.configure(-1)
        try:
            quiet = logs.progress(range(5), desc="records", log=log)
            assert isinstance(quiet, logs.PlainProgress) and not quiet.on
        finally:
            logs.configure()


# The data steps through the CLI in one process, stdout and stderr into one file (as a
# pod log or `> file 2>&1`); MIN_GAP_S=0 so a run of seconds shows its periodic lines.
STEPS = textwrap.dedent(
    """
    import sys
    from fauna import logs
    from fauna.cli import main
    from fauna.data.synthetic import generate

    logs.MIN_GAP_S = 0.0
    work, quiet = sys.argv[1], sys.argv[2:]
    generate(f"{work}/src", ["cat", "dog", "horse"], 12, layout="folders", seed=1)
    for argv in (
        ["ingest", "--source", f"{work}/src", "--out", f"{work}/raw"],
        ["preprocess", "--raw", f"{work}/raw", "--out", f"{work}/pre", "--image-size", "32"],
        ["split", "--data", f"{work}/pre", "--out", f"{work}/split"],
        ["augment", "--data", f"{work}/split", "--out", f"{work}/aug", "--mode", "oversample"],
    ):
        assert main([*argv, *quiet]) == 0, argv
    """
)


def run_steps(work: Path, *flags: str) -> str:
    log = work / "steps.log"
    work.mkdir()
    with open(log, "w") as fh:
        done = subprocess.run(
            [sys.executable, "-c", STEPS, str(work), *flags],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    return text


def test_steps_into_a_file_show_lines_not_bars_and_each_summary_once(tmp_path: Path) -> None:
    text = run_steps(tmp_path / "plain")
    assert not [m for m in BAR_MARKS if m in text], text
    # The periodic line: count, share, rate, elapsed, ETA; then the closing line.
    assert "[ingest] write: 4/36 img (11%), " in text and " elapsed, ETA " in text, text
    assert "[ingest] write: 36/36 img in " in text
    for summary in (
        "[ingest] 36 images in 3 classes from ",
        "[preprocess] 36 in = 36 kept + 0 quarantined: 32px crop JPEGs in 1 shard(s) -> ",
        "[split] 36 in = ",
        "[augment] oversample: train ",
    ):
        assert text.count(summary) == 1, (summary, text)
    assert text.count(" in = ") == 3  # ingest, preprocess, split: no second summary


def test_quiet_steps_print_nothing(tmp_path: Path) -> None:
    assert run_steps(tmp_path / "quiet", "-q") == ""
