"""``easyrec predict``: a checkpoint's predictions for every row of a CSV or Parquet file, streamed in batches.

The input is read a block at a time (pyarrow's streaming CSV reader, Parquet record batches) and each batch's
predictions are appended to the output as they come, so memory stays bounded whatever the file's size. The output
has one row per input row, in order: the ``--keep-columns`` first, then one column per prediction:

* ``prediction``: a single loss's prediction (click probability, value, pair score);
* ``prediction/<task>``: one per task of a multi-task loss (and ESMM's conditional ``prediction/cvr``);
* ``prediction/<class>`` (``prediction/<task>/<class>``): a multi-class head's probability of each class 0..C-1.

Predictions are float32. It is written to ``<output>.partial`` and renamed at the end: an error or Ctrl-C leaves no
half-written output, and an existing output is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser, checkpoint_parser, open_partial, refuse_existing
from easyrec.console import plural

DESCRIPTION = """\
Predict every row of a CSV or Parquet file with a checkpoint (PATH: a checkpoint file or a run directory: its
best.pt, or its latest step checkpoint with --checkpoint latest). The input needs the feature columns, not the
labels. The output (CSV or Parquet, by its extension, else as the input) holds the kept columns and one
prediction column per head: prediction, prediction/<task> (multi-task), prediction/<class> (multi-class
probabilities)."""

EXAMPLES = """examples:
  easyrec predict outputs/2026-11-26/10-00-00 --input today.csv --output scores.csv --keep-columns request_id
  easyrec predict outputs/ctr-1 --input today.parquet --output scores.parquet --batch-size 65536 trainer.device=cpu"""

#: Bytes of CSV read at a time (pyarrow's block size); a row must fit in one block.
CSV_BLOCK_BYTES = 1 << 22
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


def parser() -> CommandParser:
    parser = checkpoint_parser("easyrec predict", DESCRIPTION, EXAMPLES, "trainer.device=cpu")
    parser.add_argument("--input", required=True, type=Path, metavar="FILE", help="the CSV or Parquet file to predict")
    parser.add_argument("--output", required=True, type=Path, metavar="FILE", help="the file of predictions to write")
    parser.add_argument(
        "--keep-columns",
        default="",
        metavar="A,B",
        help="input columns copied to the output before the predictions (ids), comma-separated",
    )
    parser.add_argument(
        "--batch-size", type=int, metavar="N", help="rows per batch (default: the run's data.eval_batch_size)"
    )
    parser.add_argument(
        "--delimiter",
        metavar="CHAR",
        help="of a CSV input (default: the run's data.delimiter for a CSV run, tab for .tsv, else ',')",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``easyrec predict`` command (arguments from ``sys.argv`` when ``argv`` is None); returns the rows written."""
    args = parser().parse_intermixed_args(argv)
    keep = list(dict.fromkeys(name.strip() for name in args.keep_columns.split(",") if name.strip()))
    if args.batch_size is not None and args.batch_size < 1:
        parser().error(f"argument --batch-size: {args.batch_size}: must be >= 1")
    if args.delimiter is not None and len(args.delimiter) != 1:
        parser().error(f"argument --delimiter: {args.delimiter!r}: must be one character")
    refuse_existing(args.output, args.overwrite)  # before any work
    from easyrec.saved_run import SavedRun

    saved = SavedRun.load(args.path, args.overrides, args.checkpoint, args.trust_target)
    rows = predict_file(saved, args.input, args.output, keep, args.batch_size, args.overwrite, args.delimiter)
    print(f"easyrec predict: {plural(rows, 'row')} predicted with {saved.path}, written to {args.output}")
    return rows


def predict_file(
    saved: Any,
    input_path: str | Path,
    output_path: str | Path,
    keep_columns: Sequence[str] = (),
    batch_size: int | None = None,
    overwrite: bool = False,
    delimiter: str | None = None,
    block_size: int | None = None,
) -> int:
    """Write the predictions of ``saved`` (a :class:`~easyrec.saved_run.SavedRun`) for every row of
    ``input_path`` to ``output_path``, ``keep_columns`` first; return the number of rows. ``block_size``: bytes of
    CSV read at a time (default :data:`CSV_BLOCK_BYTES`)."""
    import pyarrow as pa

    from easyrec.data.files import existing_file
    from easyrec.errors import ConfigError, OutputError

    input_path, output_path = existing_file(input_path), Path(output_path)
    if output_path.resolve() == input_path.resolve():
        raise OutputError(f"{output_path}: is the input file; write the predictions to another file")
    refuse_existing(output_path, overwrite)
    batch_size = batch_size or int(saved.config.data.eval_batch_size)
    names = prediction_names(saved)
    clash = [name for name in keep_columns if name in names]
    if clash:
        raise ConfigError(f"--keep-columns: {clash[0]!r} is also the name of a prediction column")
    spec = saved.source.spec
    wanted = list(dict.fromkeys([*keep_columns, *spec.feature_columns]))
    if input_path.suffix.lower() in PARQUET_SUFFIXES:
        schema, batches = read_parquet(input_path, wanted, batch_size)
        output_format = "parquet"
    else:
        delimiter, header = csv_options(saved, input_path, delimiter)
        block_size = block_size or CSV_BLOCK_BYTES
        schema, batches = read_csv(input_path, wanted, spec, batch_size, delimiter, header, block_size)
        output_format = "csv"
    suffix = output_path.suffix.lower()
    output_format = "parquet" if suffix in PARQUET_SUFFIXES else "csv" if suffix in CSV_SUFFIXES else output_format
    out_delimiter = "\t" if suffix == ".tsv" else (delimiter if output_format == "csv" and delimiter else ",")
    fields = [schema.field(name) for name in keep_columns] + [pa.field(name, pa.float32()) for name in names]
    output_schema = pa.schema(fields)
    encoder, source = saved.encoder, str(input_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial, sink = open_partial(output_path)
    rows = 0
    try:
        with sink, open_writer(sink, output_schema, output_format, out_delimiter) as writer:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                encoded = encoder.encode(table, f"{source} (the batch from data row {rows + 1})", labels=False)
                columns = [batch.column(name) for name in keep_columns]
                for scores in saved.predict(as_batch(encoded)):
                    values = scores.numpy()
                    columns += [values] if values.ndim == 1 else [values[:, k] for k in range(values.shape[1])]
                writer.write_batch(pa.record_batch(columns, schema=output_schema))
                rows += batch.num_rows
        os.replace(partial, output_path)
    except BaseException:  # an error or Ctrl-C: no half-written output
        partial.unlink(missing_ok=True)
        raise
    return rows


def prediction_names(saved: Any) -> list[str]:
    """The output's prediction columns, from the heads and the width of each one's predictions (a probe batch)."""
    names = []
    for head, scores in zip(saved.heads, saved.predict(saved.probe()), strict=True):
        base = f"prediction/{head.name}" if head.name else "prediction"
        names += [base] if scores.dim() == 1 else [f"{base}/{k}" for k in range(scores.shape[1])]
    return names


def as_batch(encoded: Any) -> Any:
    from easyrec.data.batches import Batch

    return Batch(encoded.dense, encoded.sparse, None, lists=encoded.lists)


def csv_options(saved: Any, path: Path, delimiter: str | None) -> tuple[str, bool | list[str]]:
    """The delimiter, and True (a header line) or the column names, of a CSV input: those of the run's data when
    it read CSV files, else a header line and ``,`` (tab for ``.tsv``); ``delimiter`` wins."""
    from easyrec.data.csv_data import CSVData

    source = saved.source
    if isinstance(source, CSVData):
        header = True if source.header else list(source.columns)
        return delimiter or source.delimiter, header
    return delimiter or ("\t" if path.suffix.lower() == ".tsv" else ","), True


def read_csv(
    path: Path,
    wanted: list[str],
    spec: Any,
    batch_size: int,
    delimiter: str,
    header: bool | list[str],
    block_size: int,
) -> tuple[Any, Iterator[Any]]:
    """The schema and the record batches (at most ``batch_size`` rows) of ``wanted`` columns of a CSV file, read a
    block at a time with the types training reads them with (ids as strings: they encode the same); the other
    kept columns as text, exactly as written."""
    import pyarrow as pa
    import pyarrow.csv as pv

    from easyrec.data.csv_data import csv_column_types, csv_header
    from easyrec.data.sources import missing_columns_error
    from easyrec.errors import DataError

    names = csv_header(path, delimiter) if header is True else list(header)
    error = missing_columns_error(path, wanted, names)
    if error:
        raise error
    types = {name: pa.string() for name in wanted}
    types.update(csv_column_types(spec, spec.feature_columns))
    options = {
        "read_options": pv.ReadOptions(column_names=None if header is True else names, block_size=block_size),
        "parse_options": pv.ParseOptions(delimiter=delimiter),
        "convert_options": pv.ConvertOptions(column_types=types, include_columns=wanted, strings_can_be_null=True),
    }

    def described(error: Exception) -> DataError:
        return DataError(describe_csv_error(path, names, str(error), options))

    try:
        reader = pv.open_csv(path, **options)
    except pa.ArrowInvalid as error:
        raise described(error) from None

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                block = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as error:
                raise described(error) from None
            yield from slices(block, batch_size)

    return reader.schema, batches()


def describe_csv_error(path: Path, names: list[str], message: str, options: dict[str, Any]) -> str:
    """pyarrow's message, or for a value that is not a number, the column and data row of the first one (found by
    streaming that column again as text)."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv

    from easyrec.data.features import NUMBER_PATTERN, first_true

    match = re.search(r"CSV column #(\d+):.* conversion error", message)
    if match:
        name = names[int(match.group(1))]
        convert = pv.ConvertOptions(column_types={name: pa.string()}, include_columns=[name], strings_can_be_null=True)
        seen = 0
        try:
            for block in pv.open_csv(path, options["read_options"], options["parse_options"], convert):
                column = block.column(0)
                bad = first_true(pc.invert(pc.match_substring_regex(column, NUMBER_PATTERN, ignore_case=True)))
                if bad is not None:
                    return f"{path}: column '{name}', row {seen + bad + 1}: {column[bad].as_py()!r} is not a number"
                seen += block.num_rows
        except pa.ArrowInvalid:
            pass  # a parse error further on: report pyarrow's message
    return f"{path}: {message.strip().splitlines()[0]}"


def read_parquet(path: Path, wanted: list[str], batch_size: int) -> tuple[Any, Iterator[Any]]:
    """The schema and the record batches (at most ``batch_size`` rows) of ``wanted`` columns of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from easyrec.data.sources import missing_columns_error
    from easyrec.errors import DataError

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    error = missing_columns_error(path, wanted, file.schema_arrow.names)
    if error:
        raise error
    schema = pa.schema([file.schema_arrow.field(name) for name in wanted])
    return schema, file.iter_batches(batch_size=batch_size, columns=wanted)


def slices(batch: Any, batch_size: int) -> Iterator[Any]:
    for start in range(0, batch.num_rows, batch_size):
        yield batch.slice(start, batch_size)


def open_writer(sink: Any, schema: Any, output_format: str, delimiter: str) -> Any:
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if output_format == "parquet":
        return pq.ParquetWriter(sink, schema)
    return pv.CSVWriter(sink, schema, write_options=pv.WriteOptions(delimiter=delimiter))
