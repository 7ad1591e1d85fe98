"""The image formats ocisquash reads and writes, each in one module holding both directions.

``commit`` is the atomic-commit base every sink stands on (it knows no format); ``ocilayout`` reads
OCI layouts (directory or tar) and writes layout directories and ``index.json``; ``dockersave`` reads
``docker save`` tarballs and builds their ``manifest.json``; ``ocitar`` writes the tar of a layout,
which with ``manifest.json`` added is a ``docker save`` tarball. Imports run one way:
``commit`` <- ``ocilayout`` <- ``dockersave`` <- ``ocitar``. Registries are ``ocisquash.registry``.
"""
