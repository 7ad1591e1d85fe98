#!/usr/bin/env python3
"""Regenerate testdata/sample.docker.tar, the README's demo image (needs umoci and skopeo).

    python3 testdata/make-sample.py [OUT.tar]

Built by tests/fixtures.py's builders (not by ocisquash) from fixed content and timestamps, so the
output is byte-identical on every run; run it only if the sample's content changes, and commit the result.
"""

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fixtures import sample_image  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "sample.docker.tar"
    img = sample_image(out)
    digest = hashlib.sha256(img.path.read_bytes()).hexdigest()
    print(f"{img.path} ({img.path.stat().st_size} bytes, sha256:{digest}) as {img.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
