"""A Griffe extension for the API page: Sphinx roles in docstrings (``:class:`~text_env.Task```) read as code.

The packages' docstrings use Sphinx's ``:param x:`` fields, which mkdocstrings parses (``docstring_style: sphinx``),
and Sphinx cross-reference roles, which it leaves as written. This turns ``:class:`~a.b.C``` into ```C``` and
``:func:`a.b.f``` into ```a.b.f```, as Sphinx would show them. Loaded by mkdocs.yml; not part of the site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|type):`(~?)([^`]+)`")


def _show(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_show, obj.docstring.value)
