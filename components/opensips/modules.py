"""What OpenSIPS is built with: the pinned source (images/opensips/pins), the patch series
applied to it (images/opensips/patches, in the order and with the sha256 of its `series` file)
and exactly the modules templates/opensips.cfg.j2 loads. One derivation for both builds:
scripts/opensips (the binary the tests run) asks this module for the list and the checked
series, and the stack's image build passes the same list and the same patches to
images/opensips/Dockerfile.

    python -m components.opensips.modules            prints the module list, space-separated
    python -m components.opensips.modules patches    prints the checked patch files, in order
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from components.base.images import ImageRecipe, third_party_folder

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPOSITORY_ROOT / "templates" / "opensips.cfg.j2"
PINS = REPOSITORY_ROOT / "images" / "opensips" / "pins"
PATCHES = REPOSITORY_ROOT / "images" / "opensips" / "patches"
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


class PatchSeriesError(ValueError):
    """The patch series does not match its `series` file."""


def patch_series(folder: Path = PATCHES) -> list[Path]:
    """The patches to apply to the pinned archive, in order, each checked against the sha256
    its line in `series` gives (`sha256sum` format), so that a patch edited without its line,
    or one left out of the series, fails the build instead of changing it unseen."""
    series = folder / "series"
    listed: list[Path] = []
    for number, line in enumerate(series.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        path = folder / name.strip()
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name.strip():
            raise PatchSeriesError(f"{series}, line {number}: expected '<sha256>  <patch file>'")
        if not path.is_file():
            raise PatchSeriesError(f"{series}, line {number}: no patch file {path.name}")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest:
            raise PatchSeriesError(f"{path.name} has sha256 {actual}, but {series} pins "
                                   f"{digest}: update the series line with the patch")
        listed.append(path)
    unlisted = sorted({p.name for p in folder.glob("*.patch")} - {p.name for p in listed})
    if unlisted:
        raise PatchSeriesError(f"{', '.join(unlisted)} in {folder} but not in its series file: "
                               "list every patch (with its sha256) or remove it")
    return listed


def opensips_build_args() -> Mapping[str, str]:
    pins = source_pins()
    # The build context is the folder of upstream archives, so the patches travel as one
    # build argument (their concatenation, applied in order by `patch`), with its sha256.
    patches = "".join(path.read_bytes().decode() for path in patch_series())
    return {"OPENSIPS_VERSION": pins["OPENSIPS_VERSION"],
            "OPENSIPS_SHA256": pins["OPENSIPS_SHA256"],
            "OPENSIPS_MODULES": " ".join(template_modules()),
            "OPENSIPS_PATCHES": patches,
            "OPENSIPS_PATCHES_SHA256": hashlib.sha256(patches.encode()).hexdigest()}


# Built from the archive beside the clone; the tag covers the Dockerfile, the pins and the list.
OPENSIPS_IMAGE = ImageRecipe("opensips", "images/opensips/Dockerfile", ("images/opensips",),
                             context=third_party_folder, build_args=opensips_build_args)
# Python 3 for the dispatcher-sync sidecar (its code comes from a ConfigMap).
DISPATCHER_SYNC_IMAGE = ImageRecipe("python", "images/dispatcher-sync/Dockerfile",
                                    ("images/dispatcher-sync",))


def main(arguments: list[str]) -> int:
    if arguments == ["patches"]:
        try:
            sys.stdout.write("".join(f"{path}\n" for path in patch_series()))
        except PatchSeriesError as error:
            sys.stderr.write(f"opensips patches: {error}\n")
            return 1
        return 0
    if arguments:
        sys.stderr.write("usage: python -m components.opensips.modules [patches]\n")
        return 2
    sys.stdout.write(" ".join(template_modules()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
