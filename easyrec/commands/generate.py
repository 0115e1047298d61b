"""``easyrec generate``: a synthetic Criteo-like data set of any size, as Parquet or CSV shards, with the true
probabilities of its binary labels, so that ``eval/oracle_auc`` works on the files.

The rows come from one click model (:class:`~easyrec.data.synthetic.ClickModel`, drawn once from the seed) in
chunks, so memory is bounded whatever ``--rows``. Chunk ``i`` of a split is drawn with its own generator, seeded
``(seed, split, i)``: the rows are the same for any ``--files``. A shard is written under a hidden temporary name
and renamed when complete, so a stopped run (Ctrl-C) leaves no half file under a final name.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser
from easyrec.console import plural

DESCRIPTION = """\
Write the synthetic Criteo-like data of data=synthetic (I1..I13, C1..C26, label, session, conversion, value,
action, teacher, weight) and the true probabilities of its binary labels (label_probability,
conversion_probability) as DIR/train/part-00000.<format> ... (--files shards) and DIR/eval/ (shards of the same
size), drawn in chunks from one click model: memory stays bounded whatever the number of rows."""

EXAMPLES = """examples:
  easyrec generate --rows 2000000 --eval-rows 200000 --files 40 --output big2m
  easyrec train data=parquet data/features=generated data.train_path=big2m/train data.eval_path=big2m/eval
  easyrec generate --rows 10000 --eval-rows 1000 --output small --format csv --seed 7"""

#: rows drawn at a time: about 50 MB of columns and 200 MB of intermediate arrays
CHUNK_ROWS = 250_000
#: rows of the sample that fits the click model's block scales and biases
CALIBRATION_ROWS = 200_000
#: rows per Parquet row group: the pieces a stream reads and hands to its loader workers
ROW_GROUP_ROWS = 65_536
#: the streams of the two splits' chunk generators (those of generate_clicks and the click model are 0 to 4)
SPLIT_STREAMS = {"train": 5, "eval": 6}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``2000000``, ``2_000_000``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"  # argparse names the type in its error: "invalid positive integer value"


def parser() -> CommandParser:
    parser = CommandParser("easyrec generate", DESCRIPTION, EXAMPLES)
    parser.add_argument("--rows", type=positive_int, required=True, metavar="N", help="training rows")
    parser.add_argument(
        "--eval-rows", type=positive_int, metavar="M", help="evaluation rows (default: a tenth of --rows, at least 1)"
    )
    parser.add_argument(
        "--files", type=positive_int, default=1, metavar="K", help="training shards, of equal rows (default 1)"
    )
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="the data set's directory")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seeds the click model and the rows")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="file format (parquet)")
    parser.add_argument("--positive-rate", type=float, default=0.25, metavar="P", help="mean click probability (0.25)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR/train and DIR/eval of a directory that is not empty"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``easyrec generate`` command (arguments from ``sys.argv`` when ``argv`` is None); returns what
    :func:`generate` returns."""
    command = parser()
    args = command.parse_args(argv)
    eval_rows = args.eval_rows or max(1, args.rows // 10)
    problem = bad_arguments(args.rows, args.files, args.output, args.overwrite, args.seed, args.positive_rate)
    if problem:
        command.error(problem)
    summary = generate(args.output, args.rows, eval_rows, args.files, args.seed, args.format, args.positive_rate)
    data = "parquet" if args.format == "parquet" else "csv"
    train, evaluation = (shlex.quote(str(args.output / split)) for split in ("train", "eval"))
    train_rows, eval_rows = (plural(summary[s]["rows"], f"{s} row") for s in ("train", "eval"))
    train_files, eval_files = (plural(summary[s]["files"], "file") for s in ("train", "eval"))
    print(
        f"wrote {train_rows} in {train_files} and {eval_rows} in {eval_files} to {args.output} "
        f"({summary['seconds']:.0f} s); train on them with:\n"
        f"  easyrec train data={data} data/features=generated data.train_path={train} data.eval_path={evaluation}"
    )
    return summary


def bad_arguments(rows: int, files: int, output: Path, overwrite: bool, seed: int, positive_rate: float) -> str | None:
    """What is wrong with the arguments, in one line naming the option, or None."""
    if files > rows:
        return f"--files {files} is more than --rows {rows}: every file needs a row"
    if not 0 <= seed < 2**32:
        return f"--seed {seed}: must be in [0, 2**32)"
    if not 0 < positive_rate < 1:
        return f"--positive-rate {positive_rate}: must be in (0, 1)"
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        return f"--output {output}: exists and is not a directory"
    if output.exists() and any(output.iterdir()) and not overwrite:
        return f"--output {output}: the directory is not empty; pass --overwrite to replace its train/ and eval/"
    return None


def generate(
    output: Path,
    rows: int,
    eval_rows: int,
    files: int,
    seed: int = 0,
    file_format: str = "parquet",
    positive_rate: float = 0.25,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``rows`` training rows in ``files`` shards to ``output/train`` and ``eval_rows`` rows to
    ``output/eval`` (shards of at most as many rows as a training shard), replacing those two directories.
    Returns ``{"train": {"rows", "files"}, "eval": {...}, "seconds"}``."""
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from easyrec.data.synthetic import ClickModel

    start = time.perf_counter()
    shard_rows = -(-rows // files)
    counts = {"train": (rows, files), "eval": (eval_rows, -(-eval_rows // shard_rows))}
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[speed]} rows/s  {task.fields[files]} files"),
        TimeRemainingColumn(),
        console=console,
        disable=not (progress and console.is_terminal),
    )
    with bar:
        if progress:
            console.print("drawing the click model and calibrating it", style="dim")
        model = ClickModel(seed, positive_rate, CALIBRATION_ROWS)
        tasks = {split: bar.add_task(split, total=n, speed="-", files=f"0/{k}") for split, (n, k) in counts.items()}
        for split, (n, k) in counts.items():
            directory = output / split
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            began, stream, task = time.perf_counter(), SPLIT_STREAMS[split], tasks[split]

            def draw(index: int, count: int, first: int, stream: int = stream) -> Any:
                return model.rows(np.random.default_rng([seed, stream, index]), count, first_session=first)

            def advance(done: int, shards: int, task: int = task, began: float = began, files: int = k) -> None:
                speed = f"{done / max(time.perf_counter() - began, 1e-9):,.0f}"
                bar.update(task, completed=done, speed=speed, files=f"{shards}/{files}")

            write_split(directory, n, k, file_format, chunk_rows, draw, advance)
    counted = {split: {"rows": n, "files": k} for split, (n, k) in counts.items()}
    return {**counted, "seconds": time.perf_counter() - start}


def write_split(
    directory: Path,
    rows: int,
    files: int,
    file_format: str,
    chunk_rows: int,
    draw: Callable[[int, int, int], Any],
    advance: Callable[[int, int], None],
) -> None:
    """Write ``rows`` rows as ``files`` shards of equal rows (to one) into ``directory``: chunk ``i`` of
    ``chunk_rows`` rows is ``draw(i, count, first_row)``; ``advance(rows_done, shards_done)`` after each chunk."""
    bounds = [rows * i // files for i in range(files + 1)]
    shard, writer = 0, None
    try:
        for index, first in enumerate(range(0, rows, chunk_rows)):
            table = draw(index, min(chunk_rows, rows - first), first)
            position, offset = first, 0
            while offset < table.num_rows:
                if writer is None:
                    writer = ShardWriter(directory / f"part-{shard:05d}.{file_format}", table.schema)
                take = min(bounds[shard + 1] - position, table.num_rows - offset)
                writer.write(table.slice(offset, take))
                position, offset = position + take, offset + take
                if position == bounds[shard + 1]:
                    writer.close()
                    shard, writer = shard + 1, None
            advance(position, shard)
    finally:
        if writer is not None:  # stopped inside a shard: its partial file goes
            writer.abandon()


class ShardWriter:
    """One shard file written under a hidden temporary name (``.<name>.partial``: pyarrow.dataset skips it) and
    renamed to ``path`` by :meth:`close`, or removed by :meth:`abandon`."""

    def __init__(self, path: Path, schema: Any) -> None:
        import pyarrow.csv as csv
        import pyarrow.parquet as pq

        self.path, self.partial = path, path.with_name(f".{path.name}.partial")
        if path.suffix == ".csv":
            self.writer = csv.CSVWriter(str(self.partial), schema)
        else:
            self.writer = pq.ParquetWriter(str(self.partial), schema)

    def write(self, table: Any) -> None:
        if self.path.suffix == ".csv":
            self.writer.write_table(table)
        else:
            self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def close(self) -> None:
        self.writer.close()
        self.partial.rename(self.path)

    def abandon(self) -> None:
        try:
            self.writer.close()
        finally:
            self.partial.unlink(missing_ok=True)
