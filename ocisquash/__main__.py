"""``python -m ocisquash``: the same as the ``ocisquash`` command."""

from ocisquash.cli import run

run()
