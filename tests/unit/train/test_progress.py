import io
import logging

from rich.console import Console

from distill.train.progress import Progress, TerminalFilter


def test_the_terminal_bar_shows_the_latest_loss():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with Progress(True, total=10, description="train", interval=1e9, console=console) as progress:
        progress.note(loss=0.123456, tokens_per_s=999.0)
        progress.advance()
        progress._bar.refresh()
    assert "loss 0.1235" in out.getvalue()


def test_progress_lines_say_where_the_work_is(caplog):
    with caplog.at_level(logging.INFO, logger="distill.progress"):
        with Progress(True, total=4, start=1, description="train", interval=0.0, console=None) as progress:
            progress.note(loss=2.5, tokens_per_s=1234.4)
            progress.advance()
    first = caplog.records[0].getMessage()
    assert first.startswith("train: step 2/4 (50%), loss 2.5000, 1234 tokens/s") and "ETA" in first
    assert caplog.records[-1].getMessage().startswith("train: step 2/4")  # the closing line, without an ETA


def test_progress_lines_stay_off_a_terminal_console(monkeypatch):
    record = logging.LogRecord("distill.progress", logging.INFO, __file__, 1, "train: step 1/2", None, None)
    other = logging.LogRecord("distill.train.loop", logging.INFO, __file__, 1, "resuming", None, None)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert not TerminalFilter().filter(record) and TerminalFilter().filter(other)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert TerminalFilter().filter(record)
