"""The tar codec: header rules (``header``) and header encoding (``encode``), shared by every reader and writer.

It sits below both its users, the outer archive reader (``ocisquash.tarheader``: ``docker save`` and OCI
tars) and the merge's layer reader and writer (``ocisquash.merge``), and imports nothing of ocisquash
but ``errors`` and ``limits``. ``header`` runs on the merge's hot path and is compiled with it (setup.py).
"""
