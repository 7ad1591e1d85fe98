#!/usr/bin/env python3
"""An experiment kept for its figure: the read phase of a gzip→gzip squash, serial as ``merge.stream``
does it, or shared by two forked workers.

    python bench/forked_read.py IMAGE.oci serial|workers

``serial``: the squashed layers read top down in this process, each body spooled unless a layer above
hides it (what ``merge.stream`` does before it plans). ``workers``: two forked processes take the
layers largest first; each spools the bodies that the layers it has read above them do not hide (it
cannot know the other worker's) and pickles the headers, as a parent would need them. Prints the wall and CPU time
(children included) and the bytes spooled (by each worker). bench/README.md ("Round three, continued") has
the figures: a gain smaller than this machine's noise once the parent's work is counted, so the design
was not built.
"""

from __future__ import annotations

import os
import pickle
import resource
import sys
import time

from ocisquash import cores, heap, squash
from ocisquash.merge.layerwrite import Spool
from ocisquash.merge.oneread import Hits, _Spooler
from ocisquash.merge.records import MergeLimits
from ocisquash.merge.tarread import read_layer
from ocisquash.sources import open_source


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    heap.tune()
    with open_source(path) as src:
        inputs = squash.layer_inputs(src.choose(None), verify_scan=False)
        lim = MergeLimits.current()
        t, c = time.monotonic(), _cpu()
        if mode == "serial":
            spool, hits = Spool(None), Hits()
            for i in range(len(inputs) - 1, -1, -1):
                entries, _ = read_layer(inputs[i], lim, None, _Spooler(i, hits, spool))
                hits.add(h for h, _ in entries)
            spool.seal()
            print(f"spooled {spool.size} bytes")
        else:
            order = sorted(range(len(inputs)), key=lambda i: -inputs[i].work)
            tasks, feed = os.pipe()
            os.write(feed, bytes(order))
            os.close(feed)
            pids = []
            for _ in range(2):
                pid = os.fork()
                if pid == 0:
                    with cores.one_core():
                        spool, seen = Spool(None), []
                        while b := os.read(tasks, 1):
                            i = b[0]
                            hits = Hits()  # from the layers this worker has read that lie above layer i
                            for k, names in seen:
                                if k > i:
                                    hits.add(iter(names))
                            entries, _ = read_layer(inputs[i], lim, None, _Spooler(i, hits, spool))
                            pickle.dumps([(h.name, h.type, h.size, h.linkname, h.meta, h.dev, off)
                                          for h, off in entries], pickle.HIGHEST_PROTOCOL)
                            seen.append((i, [h for h, _ in entries]))
                        spool.seal()
                        # one write: the two workers share the pipe, and print() may write the line in pieces
                        os.write(1, f"worker spooled {spool.size} bytes\n".encode())
                    os._exit(0)
                pids.append(pid)
            for pid in pids:
                os.waitpid(pid, 0)
        print(f"{mode}: {time.monotonic() - t:.2f} s wall, {_cpu() - c:.2f} s cpu")


if __name__ == "__main__":
    main()
