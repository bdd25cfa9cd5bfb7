"""A short results table on the terminal."""

from __future__ import annotations

from distill.metrics import METRIC_KEYS


def print_table(rows: list[tuple[str, str, dict]], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = [*METRIC_KEYS[metric], *(["self_bleu"] if any("self_bleu" in m for _, _, m in rows) else [])]
    table = Table(title=f"{rows[0][2]['task']} / {rows[0][2]['split']} ({rows[0][2]['num_examples']} examples)")
    for column in ("role", "model", *keys):
        table.add_column(column)
    for role, name, metrics in rows:
        table.add_row(role, name, *(f"{metrics[k]:.2f}" if k in metrics else "-" for k in keys))
    Console().print(table)
