"""Loaded with ``-p`` (pyproject addopts) before pytest starts capturing output.

absl (pulled in by rouge-score) binds a logging handler to the sys.stderr of
the moment it is first imported. Imported inside a test, that is the test's
capture stream, closed when the test ends, and the interpreter then crashes
writing to it. Importing it here binds the real stderr.
"""

import absl.logging  # noqa: F401
