"""ocisquash: squash container image layers without a daemon.

Reads and writes OCI image layouts (directory or tar) and ``docker save`` tarballs, squashes an image's
layers into one merged layer, and lists what an input holds. The library comes first; ``ocisquash.cli``
is the command-line layer over it. docs/api.md shows the library in use::

    import ocisquash

    with ocisquash.open("app.tar") as src:
        report = src.image("app:1.0").squash("app-squashed.tar", tags=["app:squashed"])

Every name in ``__all__`` is importable from here, but loads only when first used (PEP 562): the CLI
imports this package on every run, and ``import ocisquash`` costs well under a millisecond this way,
where the API's codecs, merge and sinks would cost ~60 ms. The error classes are imported at once:
they are one small module with no imports.
"""

from __future__ import annotations

from ocisquash.errors import (
    Ambiguous,
    DigestMismatch,
    FormatError,
    LimitExceeded,
    MissingBlob,
    NotFound,
    OcisquashError,
    OutputError,
    UnsafePath,
    UsageError,
)

# Not typing.TYPE_CHECKING: importing typing costs more than the rest of this module (mypy reads any
# name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ocisquash.api import (
        Image,
        Source,
        convert_image,
        list_images,
        open,
        parse_filters,
        registry_access,
        safety_limits,
        squash_image,
        validate_input,
    )
    from ocisquash.apitypes import Compression, ConvertReport, Cut, OutputFormat, RegistryAccess
    from ocisquash.listing.images import ImageSummary
    from ocisquash.squash import Report as SquashReport
    from ocisquash.validate import Validation

__version__ = "0.1.0"

# name -> (module, attribute): what __getattr__ imports on first use.
_LAZY = {
    **{name: ("ocisquash.apitypes", name) for name in (
        "Compression", "ConvertReport", "Cut", "OutputFormat", "RegistryAccess")},
    **{name: ("ocisquash.api", name) for name in (
        "Image", "Source", "convert_image", "list_images", "open", "parse_filters", "registry_access",
        "safety_limits", "squash_image", "validate_input")},
    "ImageSummary": ("ocisquash.listing.images", "ImageSummary"),
    "Validation": ("ocisquash.validate", "Validation"),
    "SquashReport": ("ocisquash.squash", "Report"),
}

__all__ = [
    "Ambiguous",
    "Compression",
    "ConvertReport",
    "Cut",
    "DigestMismatch",
    "FormatError",
    "Image",
    "ImageSummary",
    "LimitExceeded",
    "MissingBlob",
    "NotFound",
    "OcisquashError",
    "OutputError",
    "OutputFormat",
    "RegistryAccess",
    "Source",
    "SquashReport",
    "UnsafePath",
    "UsageError",
    "Validation",
    "convert_image",
    "list_images",
    "open",
    "parse_filters",
    "registry_access",
    "safety_limits",
    "squash_image",
    "validate_input",
]

if not TYPE_CHECKING:  # for mypy, the imports above define these names, and a typo stays an error

    def __getattr__(name: str) -> object:
        if name not in _LAZY:
            raise AttributeError(f"module 'ocisquash' has no attribute {name!r}")
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # the next lookup is a plain dict hit
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
