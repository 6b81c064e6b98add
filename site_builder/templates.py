"""Where the site's templates and static files come from.

The defaults ship inside the package (``heatmetro.site_template``, package data), so an
installed wheel publishes without a source tree. An operator who restyles the site sets
``template_dir`` in the config: a file there with the same name as a shipped template or
static file wins, everything else falls back to the shipped one (datasette's pattern).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2

PACKAGE = "heatmetro.site_template"


def shipped_templates() -> Traversable:
    """The templates that ship with heatmetro (package data)."""
    return resources.files(PACKAGE)


def environment(template_dir: Path | None, *, html_only_escape: bool = False) -> jinja2.Environment:
    """A jinja2 environment over the operator's ``template_dir`` (if any), then the shipped ones.

    ``StrictUndefined`` turns a misspelt or missing variable into a build failure instead
    of a silently empty spot on a published page.

    Args:
        template_dir: the operator's overrides, or None.
        html_only_escape: escape ``*.html.j2`` only (the Markdown README is not HTML).
    """
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.PackageLoader("heatmetro", "site_template"))
    autoescape = (
        jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False)
        if html_only_escape
        else True
    )
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def static_files(template_dir: Path | None) -> list[tuple[str, Traversable]]:
    """``(relative name, file)`` for every static file, the operator's winning by name, sorted."""
    found: dict[str, Traversable] = dict(_walk(shipped_templates() / "static", ""))
    if template_dir is not None and (template_dir / "static").is_dir():
        found.update(_walk(template_dir / "static", ""))
    return sorted(found.items())


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            yield from _walk(entry, f"{name}/")
        elif entry.is_file() and not entry.name.startswith((".", "__")):
            yield name, entry
