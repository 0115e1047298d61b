"""Terminal output: counts in words, plain log lines outside a terminal, the progress bar's timing and blanks."""

from __future__ import annotations

import io
import logging

from rich.console import Console
from rich.logging import RichHandler

from easyrec.console import PlainHandler, TrainingProgress, TrainingReport, plural, rich_stderr_handler


def test_plural():
    assert [plural(n, "epoch") for n in (0, 1, 2, 1000)] == ["0 epochs", "1 epoch", "2 epochs", "1,000 epochs"]


def test_outside_a_terminal_log_records_are_single_unwrapped_lines(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # rich would take stderr for a terminal
        monkeypatch.delenv(name, raising=False)
    handler = rich_stderr_handler(show_path=False, rich_tracebacks=False)  # stderr is captured: not a terminal
    assert isinstance(handler, PlainHandler)
    handler.setFormatter(logging.Formatter("%(message)s"))  # as conf/hydra/job_logging/rich.yaml sets it
    logger = logging.getLogger("tests.console")
    logger.addHandler(handler)
    path = "/runs/" + "a-long-directory-name/" * 6 + "checkpoints/step-000000022.pt"
    try:
        logger.warning("checkpoint: %s", path)
    finally:
        logger.removeHandler(handler)
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(f" WARNING checkpoint: {path}") and len(line) > 150


def test_in_a_terminal_logs_go_through_rich(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stderr is a terminal
    assert isinstance(rich_stderr_handler(show_path=False), RichHandler)


def test_the_progress_bar_redraws_on_time_and_shows_a_dash_until_there_is_a_value():
    screen = io.StringIO()
    now = [0.0]
    console = Console(file=screen, force_terminal=True, width=140, color_system=None)

    def drawn() -> str:
        """What was drawn since the last call."""
        text = screen.getvalue()[drawn.seen :]
        drawn.seen += len(text)
        return text

    drawn.seen = 0
    with TrainingProgress(console, total=10, clock=lambda: now[0]) as progress:
        assert "step 0/10" in drawn() and "- samples/s  loss -  lr -" in screen.getvalue()
        now[0] = 0.5
        progress.advance(1, 256, 1e-3)
        assert drawn() == ""  # under a second since the last redraw
        now[0] = 1.25
        progress.advance(2, 256, 1e-3)  # no logging interval ended yet: no loss
        assert "step 2/10" in (text := drawn()) and "410 samples/s  loss -  lr 0.001" in text
        now[0] = 1.5
        progress.advance(3, 256, 1e-3, {"train/loss": 0.25})
        assert drawn() == ""
        now[0] = 2.5
        progress.advance(4, 512, 5e-4)
        assert "step 4/10" in (text := drawn()) and "614 samples/s  loss 0.25000  lr 0.0005" in text
        now[0] = 2.6
        progress.advance(5, 256, 5e-4)
        assert drawn() == ""
    assert "step 5/10" in drawn()  # closing the bar shows the last step


def test_without_a_terminal_the_progress_is_a_log_line_per_logging_interval(caplog):
    report = TrainingReport(logging.getLogger("tests.console"), Console(file=io.StringIO()))  # not a terminal
    assert not report.show_bar
    train = {"train/loss": 0.4567891, "train/lr": 1e-3, "train/samples_per_s": 1234.4}
    with caplog.at_level(logging.INFO, logger="tests.console"), report.progress(total=4) as advance:
        advance(1, 256, 1e-3, None)
        advance(2, 256, 1e-3, train)
    assert caplog.messages == ["step 2/4: loss 0.45679, lr 0.001, 1234 samples/s"]


def test_the_results_are_a_table_then_the_run_directory_and_the_commands_to_look_at_it(capsys, tmp_path):
    report = TrainingReport(logging.getLogger("tests.console"))
    report.results("easyrec: 2 steps, 1 epoch", {"eval/auc": 0.71234567, "train/steps": 2.0}, tmp_path, ["ui", "show"])
    out = capsys.readouterr().out
    assert "easyrec: 2 steps, 1 epoch" in out and "0.71235" in out and "│ train/steps │       2 │" in out
    assert out.splitlines()[-3:] == [f"run directory: {tmp_path.resolve()}", "to look at it: ui", f"{'':<14} show"]
