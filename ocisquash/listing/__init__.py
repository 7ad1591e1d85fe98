"""Seeing inside images, one module per command; pure logic: nothing here prints.

- ``listing.images``: ``images`` summaries, shared and unique sizes, docker's filters and rows;
- ``listing.history``: ``history`` rows;
- ``listing.analyze``: ``analyze`` figures, with dive's efficiency and CI rules;
- ``listing.sizes``: a layer's sizes, docker's and ocisquash's, which all three show.

Go's time and size formatting lives beside docker's ``--format`` templates, in ``ocisquash.goformat``.
(``validate`` is its own module, ``ocisquash.validate``.)
"""

from __future__ import annotations

# Tests written before the split call ``listing.summarize``, and tests are being moved between files by
# subject meanwhile: the one name they use stays reachable here.
from ocisquash.listing.images import summarize

__all__ = ["summarize"]
