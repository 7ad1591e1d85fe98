"""ocisquash: squash container image layers without a daemon.

Reads and writes OCI image layouts (directory or tar) and ``docker save`` tarballs, squashes an image's
layers into one merged layer, and lists what an input holds. The library comes first; ``ocisquash.cli``
is a thin command-line layer over it.
"""

__version__ = "0.1.0"
