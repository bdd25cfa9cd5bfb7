"""`distill report`: tables and plots from the outputs of `distill train` and `distill eval`.

The stages are separate so each can be tested on plain data:
``collect`` (files -> run records), ``aggregate`` (records -> rows, seed groups),
``series`` (rows -> plot data), ``plots`` (plot data -> figures),
``render`` (rows -> Markdown/CSV) and ``build`` (the whole pipeline, writing files).
"""

from distill.report.build import build_report

__all__ = ["build_report"]
