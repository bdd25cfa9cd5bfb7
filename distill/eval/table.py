"""A short results table on the terminal: one row per model and decoding."""

from __future__ import annotations

from distill.metrics import METRIC_KEYS


def decoding_label(entry: dict) -> str:
    """``greedy``, ``beam4`` or ``sample T=0.5 ×4``: what produced the numbers of a row."""
    if entry.get("strategy") == "sample":
        return f"sample T={entry['sampling_temperature']:g} ×{entry['num_samples']}"
    return entry.get("name", "?")


def table_rows(rows: list[tuple[str, str, dict]], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells; every score sits in the row of the decoding that produced it."""
    entries = [(role, name, entry) for role, name, metrics in rows for entry in metrics["by_decoding"]]
    keys = [*METRIC_KEYS[metric], *(["self_bleu"] if any("self_bleu" in e for _, _, e in entries) else [])]
    body = [[role, name, decoding_label(entry), *(f"{entry[k]:.2f}" if k in entry else "-" for k in keys)]
            for role, name, entry in entries]
    return ["role", "model", "decoding", *keys], body


def print_table(rows: list[tuple[str, str, dict]], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    header, body = table_rows(rows, metric)
    first = rows[0][2]
    table = Table(title=f"{first['task']} / {first['split']} ({first['num_examples']} examples)")
    for column in header:
        table.add_column(column)
    for cells in body:
        table.add_row(*cells)
    Console().print(table)
