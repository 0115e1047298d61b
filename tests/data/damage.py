"""Damaged data files for the tests of unreadable pieces."""

from pathlib import Path

import pyarrow.parquet as pq


def damage_row_group(path: Path, group: int, column: int) -> None:
    """Overwrite the data pages of ``column`` in row group ``group`` of the Parquet file ``path``: its footer stays
    whole (the file lists), reading that row group fails."""
    chunk = pq.read_metadata(path).row_group(group).column(column)
    damaged = bytearray(path.read_bytes())
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    damaged[start : start + size] = b"\x55" * size
    path.write_bytes(bytes(damaged))
