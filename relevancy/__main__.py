"""``python -m relevancy`` → the command-line interface (see :mod:`relevancy.cli`)."""

from .cli import main

raise SystemExit(main())
