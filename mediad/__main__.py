"""`python -m mediad`."""

from mediad.cli import entry

entry()
