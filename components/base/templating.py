"""jinja2 rendering of the files in `templates/`.

Templates only print values their component prepared: `StrictUndefined` turns a missing value
into an error at render time instead of an empty string in a production config.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **values: Any) -> str:
    """Render `templates/<template>` with exactly the values given."""
    return _environment().get_template(template).render(**values)
