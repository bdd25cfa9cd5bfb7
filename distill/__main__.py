"""``python -m distill`` (what ``accelerate launch -m distill train ...`` runs): the ``distill`` command."""

import sys

from distill.cli import main

sys.exit(main())
