#!/usr/bin/env python3
"""Time the phases of one squash in-process: pass 1 (plan), pass 2 (write, uncompressed and gzip), and
``merge.stream`` (what a squash runs: each layer read once, contents spooled to a temporary file, then
the same bytes as pass 2 written from it), uncompressed and gzip.

    python bench/phases.py IMAGE [--image REF]

Pass 2 writes to a null sink, so the figures show the merge alone; run it beside `py-spy record --gil`
to see which thread holds the GIL. Used for the profile in the performance notes.
"""

from __future__ import annotations

import argparse
import resource
import time

from ocisquash import compression, merge, squash
from ocisquash.sources import open_source


class _Null:
    def write(self, b: bytes) -> int:
        return len(b)

    def flush(self) -> None:
        pass


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--image", dest="ref")
    args = ap.parse_args()
    with open_source(args.image) as src:
        img = src.choose(args.ref)
        inputs = squash.layer_inputs(img, verify_scan=False)
        t, c = time.monotonic(), _cpu()
        plan = merge.plan(inputs, 0)
        print(f"pass 1 (plan): {time.monotonic() - t:.2f} s wall, {_cpu() - c:.2f} s cpu, "
              f"{sum(s.entries for s in plan.layers)} entries")
        t, c = time.monotonic(), _cpu()
        ws = merge.write(plan, inputs, _Null())  # type: ignore[arg-type]
        print(f"pass 2 (write, no compression): {time.monotonic() - t:.2f} s wall, {_cpu() - c:.2f} s cpu, "
              f"{ws.bytes_written / 1e6:.0f} MB out")
        t, c = time.monotonic(), _cpu()
        with compression.compressing_writer(_Null(), compression.Codec.GZIP) as w:
            merge.write(plan, inputs, w)
        print(f"pass 2 (write, gzip): {time.monotonic() - t:.2f} s wall, {_cpu() - c:.2f} s cpu")
        inputs = squash.layer_inputs(img, verify_scan=False)
        for label, out in (("no compression", None), ("gzip", compression.Codec.GZIP)):
            t, c = time.monotonic(), _cpu()
            if out is None:
                _, ws = merge.stream(inputs, 0, _Null())  # type: ignore[arg-type]
            else:
                with compression.compressing_writer(_Null(), out) as w:
                    _, ws = merge.stream(inputs, 0, w)
            print(f"stream (one read per layer, {label}): {time.monotonic() - t:.2f} s wall, {_cpu() - c:.2f} s cpu, "
                  f"{ws.refetched} bodies read a second time")


if __name__ == "__main__":
    main()
