"""What OpenSIPS is built with: the pinned source (images/opensips/pins) and exactly the modules
templates/opensips.cfg.j2 loads. One derivation for both builds: scripts/opensips (the binary
the tests run) asks this module for the list, and the stack's image build passes the same list
to images/opensips/Dockerfile.

    python -m components.opensips.modules    prints the module list, space-separated
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

from components.base.images import ImageRecipe, third_party_folder

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPOSITORY_ROOT / "templates" / "opensips.cfg.j2"
PINS = REPOSITORY_ROOT / "images" / "opensips" / "pins"
# 4.0 links these into the core: `loadmodule "proto_udp.so"` needs no module file.
BUILT_IN = frozenset({"proto_udp", "proto_tcp"})
LOADMODULE = re.compile(r'loadmodule "([a-z0-9_]+)\.so"')


def template_modules(template: Path = TEMPLATE) -> list[str]:
    """Every module the template may load, whatever the stack's features switch on."""
    return sorted(set(LOADMODULE.findall(template.read_text())) - BUILT_IN)


def source_pins(pins: Path = PINS) -> dict[str, str]:
    values = {}
    for line in pins.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def opensips_build_args() -> Mapping[str, str]:
    pins = source_pins()
    return {"OPENSIPS_VERSION": pins["OPENSIPS_VERSION"],
            "OPENSIPS_SHA256": pins["OPENSIPS_SHA256"],
            "OPENSIPS_MODULES": " ".join(template_modules())}


# Built from the archive beside the clone; the tag covers the Dockerfile, the pins and the list.
OPENSIPS_IMAGE = ImageRecipe("opensips", "images/opensips/Dockerfile", ("images/opensips",),
                             context=third_party_folder, build_args=opensips_build_args)
# Python 3 for the dispatcher-sync sidecar (its code comes from a ConfigMap).
DISPATCHER_SYNC_IMAGE = ImageRecipe("python", "images/dispatcher-sync/Dockerfile",
                                    ("images/dispatcher-sync",))


if __name__ == "__main__":
    sys.stdout.write(" ".join(template_modules()) + "\n")
