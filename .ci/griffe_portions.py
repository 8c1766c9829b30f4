"""A griffe extension for the API reference: the extensions' portions of ``stabilize``.

Core's ``stabilize/__init__.py`` extends its ``__path__`` with ``pkgutil.extend_path`` so
that ``stabilize.llm``, ``stabilize.hitl`` and ``stabilize.streaming`` (each in its own
distribution's ``src/``) import as subpackages. griffe reads core's package from its own
directory only, so this extension loads each portion on its own and attaches it to the
``stabilize`` package that mkdocstrings documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[1]
PORTIONS = {
    "llm": ROOT / "packages/stabilize-llm/src",
    "hitl": ROOT / "packages/stabilize-hitl/src",
    "streaming": ROOT / "packages/stabilize-stream/src",
}


class Portions(griffe.Extension):
    """Attach each extension's subpackage to the loaded ``stabilize`` package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Load ``stabilize.<sub>`` from its own source tree once core's package is loaded.

        Args:
            pkg: The package griffe just loaded.
            loader: The loader that loaded it (its docstring options are reused).
            **kwargs: What other griffe versions pass.
        """
        if pkg.path != "stabilize":
            return
        for sub, src in PORTIONS.items():
            if sub in pkg.members:
                continue
            # Alone on its search path, the portion's stabilize/ has no __init__.py: a
            # namespace package holding only that subpackage.
            portion = griffe.GriffeLoader(
                docstring_parser=loader.docstring_parser,
                docstring_options=loader.docstring_options,
                search_paths=[src],
            ).load(f"stabilize.{sub}")
            assert isinstance(portion, griffe.Module)
            portion.parent = pkg
            pkg.set_member(sub, portion)
