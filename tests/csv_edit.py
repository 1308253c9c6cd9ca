"""Test helper: change one cell of a CSV file in place (copied data, never the shipped files)."""

from __future__ import annotations

from pathlib import Path


def set_csv_cell(path: Path, column: str, row: int, value: str) -> None:
    """Set ``column`` of data row ``row`` (0-based, after the header) to ``value``."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
