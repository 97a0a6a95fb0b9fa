"""A checker for rendered opensips.cfg files against the names OpenSIPS 4.0.1 accepts.

No OpenSIPS binary can be installed here, so this reads the config the way the parts of the
OpenSIPS parser that reject unknown names do: global keywords, socket options, loadmodule,
modparam (module, parameter, value type), and every function call with its argument count and
the route types it may be called from. The reference list is `shared/reference/opensips-4.0.json`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

# A copy of the team's shared reference, so a clone checks itself; test_opensips_config.py
# fails when the shared original (beside the repository) and this copy drift apart.
REFERENCE = Path(__file__).resolve().parent / "reference" / "opensips-4.0.1.json"
SHARED_REFERENCE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "opensips-4.0.json"
)

ROUTE_TYPES = {
    "route": "request", "failure_route": "failure", "onreply_route": "onreply",
    "branch_route": "branch", "timer_route": "timer", "startup_route": "startup",
    "event_route": "event", "local_route": "local", "error_route": "error",
}
# Statements of the script language that look like calls.
STATEMENTS = {"if", "while", "switch", "for", "route", "xlog", "log", "assert", "return",
              "exit", "drop", "async", "launch", "case", "default"}
TRANSPORT_MODULES = {"udp": "proto_udp", "tcp": "proto_tcp", "tls": "proto_tls"}


@cache
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


@dataclass
class Block:
    kind: str  # route, failure_route, ...
    name: str  # "" for the main request route
    body: str
    line: int


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    calls: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.problems.append(f"line {line}: {message}")


def strip_comments(text: str) -> str:
    """Blank out comments, keeping strings and line numbers."""
    out = []
    index = 0
    in_string: str | None = None
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if char == "\\" and index + 1 < len(text):
                out.append(text[index + 1])
                index += 2
                continue
            if char == in_string:
                in_string = None
        elif char in "\"'":
            in_string = char
            out.append(char)
        elif char == "#":
            end = text.find("\n", index)
            end = len(text) if end == -1 else end
            index = end
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index)
            end = len(text) if end == -1 else end + 2
            out.append("".join("\n" if c == "\n" else " " for c in text[index:end]))
            index = end
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


def mask_strings(text: str) -> str:
    """Replace the content of string literals with spaces (same length)."""
    return re.sub(r'"(?:\\.|[^"\\])*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', text)


def split_arguments(text: str) -> list[str]:
    args: list[str] = []
    depth = 0
    current = ""
    in_string = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            current += char
            if char == "\\":
                current += text[index + 1]
                index += 2
                continue
            if char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            current += char
        elif char == "(":
            depth += 1
            current += char
        elif char == ")":
            depth -= 1
            current += char
        elif char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    if current.strip():
        args.append(current.strip())
    return args


def matching_paren(text: str, start: int) -> int:
    """Index of the ')' closing the '(' at `start`, skipping strings."""
    depth = 0
    in_string = False
    index = start
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 2
                continue
            if char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unbalanced parenthesis at offset {start}")


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def route_blocks(text: str) -> tuple[list[Block], str]:
    """The route blocks, and the global part of the config with the blocks removed."""
    blocks = []
    pattern = re.compile(r"^\s*(" + "|".join(ROUTE_TYPES) + r")\s*(\[([^\]]*)\])?\s*\{", re.M)
    globals_text = text
    for match in pattern.finditer(mask_strings(text)):
        open_brace = match.end() - 1
        depth = 0
        index = open_brace
        masked = mask_strings(text)
        while index < len(masked):
            if masked[index] == "{":
                depth += 1
            elif masked[index] == "}":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        name = (match.group(3) or "").split(",")[0].strip()
        blocks.append(Block(match.group(1), name, text[open_brace + 1:index],
                            line_of(text, match.start())))
        span = text[match.start():index + 1]
        globals_text = globals_text.replace(span, "\n" * span.count("\n"), 1)
    return blocks, globals_text


def modules_defining(function: str) -> list[str]:
    return [name for name, module in reference()["modules"].items()
            if function in module.get("functions", {})]


def check_config(text: str) -> Findings:
    ref = reference()
    findings = Findings()
    clean = strip_comments(text)
    blocks, global_text = route_blocks(clean)

    # Global part: keywords, sockets, modules, modparams.
    loaded: set[str] = set()
    socket_protos: list[tuple[str, int]] = []
    modparams: list[tuple[str, str, str, int]] = []
    statement = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=|\()", re.M)
    for match in statement.finditer(global_text):
        word, kind = match.group(1), match.group(2)
        line = line_of(global_text, match.start(1))
        if word == "modparam" and kind == "(":
            close = matching_paren(global_text, match.end() - 1)
            args = split_arguments(global_text[match.end():close])
            if len(args) != 3:
                findings.add(line, f"modparam takes 3 arguments, got {len(args)}")
                continue
            modparams.append((args[0].strip('"'), args[1].strip('"'), args[2], line))
            continue
        if kind == "=" and word not in ref["core_keywords"]:
            findings.add(line, f"unknown core keyword {word!r}")
        if word == "socket":
            rest = global_text[match.end():].split("\n", 1)[0].strip()
            spec, *options = rest.split()
            proto = spec.split(":", 1)[0]
            socket_protos.append((proto, line))
            option_names = {o.split()[0] for o in ref["socket_options"]}
            skip = False
            for option in options:
                if skip:
                    skip = False
                    continue
                if option not in option_names:
                    findings.add(line, f"unknown socket option {option!r}")
                elif any(o.startswith(option + " ") for o in ref["socket_options"]):
                    skip = True
    for match in re.finditer(r'^\s*loadmodule\s+"([^"]+)"', global_text, re.M):
        module = match.group(1).removesuffix(".so").rsplit("/", 1)[-1]
        line = line_of(global_text, match.start())
        if module not in ref["modules"]:
            findings.add(line, f"unknown module {module!r}")
        if module in loaded:
            findings.add(line, f"module {module!r} loaded twice")
        loaded.add(module)
        findings.modules.append(module)
    for module, param, value, line in modparams:
        if module not in loaded:
            findings.add(line, f"modparam for module {module!r}, which is not loaded")
            continue
        params = ref["modules"][module].get("params", {})
        if param not in params:
            findings.add(line, f"module {module!r} has no parameter {param!r}")
            continue
        is_string = value.startswith('"')
        if not is_string and not re.fullmatch(r"-?[0-9]+", value):
            findings.add(line, f"modparam {module}.{param} value {value!r} is neither "
                               "a string nor an integer")
        expected = params[param]
        if expected == "int" and is_string:
            findings.add(line, f"modparam {module}.{param} takes an integer, got {value}")
        if expected == "str" and not is_string:
            findings.add(line, f"modparam {module}.{param} takes a string, got {value}")
    for proto, line in socket_protos:
        needed = TRANSPORT_MODULES.get(proto)
        if needed is None:
            findings.add(line, f"unknown socket protocol {proto!r}")
        elif needed not in loaded:
            findings.add(line, f"socket uses {proto} but {needed} is not loaded")
    if "proto_tls" in loaded and not {"tls_mgm", "tls_openssl"} <= loaded:
        findings.add(1, "proto_tls needs tls_mgm and a TLS library module (tls_openssl)")

    # Route blocks: which route types reach each named route.
    defined: dict[tuple[str, str], Block] = {}
    for block in blocks:
        key = (block.kind, block.name)
        if key in defined:
            findings.add(block.line, f"{block.kind}[{block.name}] defined twice")
        defined[key] = block
    reached: dict[str, set[str]] = defaultdict(set)
    callers: dict[str, set[str]] = defaultdict(set)
    for block in blocks:
        for call in re.finditer(r"(?<![\w$])route\s*\(\s*([A-Za-z0-9_]+)\s*\)",
                                mask_strings(block.body)):
            callers[call.group(1)].add(f"{block.kind}:{block.name}")
    for block in blocks:
        if block.kind != "route" or block.name == "":
            reached[f"{block.kind}:{block.name}"].add(ROUTE_TYPES[block.kind])
    changed = True
    while changed:
        changed = False
        for name, sources in callers.items():
            target = f"route:{name}"
            for source in sources:
                new = reached[source] - reached[target]
                if new:
                    reached[target] |= new
                    changed = True

    core_functions = ref["core_functions"]
    for block in blocks:
        context = reached[f"{block.kind}:{block.name}"]
        masked = mask_strings(block.body)
        # Not a call: `$avp(x)`, `$T.x(` and `$(avp(x){transformation})`.
        for call in re.finditer(r"(?<![\w$.])(?<!\$\()([A-Za-z_][A-Za-z0-9_]*)\s*\(", masked):
            function = call.group(1)
            line = block.line + block.body.count("\n", 0, call.start())
            if function in STATEMENTS:
                if function == "route":
                    close = matching_paren(block.body, call.end() - 1)
                    target = block.body[call.end():close].strip()
                    if ("route", target) not in defined:
                        findings.add(line, f"route({target}) calls an undefined route")
                continue
            close = matching_paren(block.body, call.end() - 1)
            args = split_arguments(block.body[call.end():close])
            findings.calls.append((function, len(args), block.kind))
            if function in core_functions:
                spec = core_functions[function]
                routes: list[str] = []
            else:
                owners = [m for m in modules_defining(function) if m in loaded]
                if not owners:
                    where = modules_defining(function)
                    findings.add(line, f"function {function}() is not exported by any loaded "
                                       f"module" + (f" (it is in {where})" if where else ""))
                    continue
                spec = ref["modules"][owners[0]]["functions"][function]
                routes = spec.get("routes", [])
            if not spec["min_args"] <= len(args) <= spec["max_args"]:
                findings.add(line, f"{function}() takes {spec['min_args']}..{spec['max_args']} "
                                   f"arguments, got {len(args)}")
            if routes and not context <= set(routes):
                findings.add(line, f"{function}() is not allowed in {sorted(context - set(routes))}"
                                   f" routes (allowed: {routes})")
            if function in ("t_on_failure", "t_on_reply", "t_on_branch") and args:
                kind = {"t_on_failure": "failure_route", "t_on_reply": "onreply_route",
                        "t_on_branch": "branch_route"}[function]
                if (kind, args[0].strip('"')) not in defined:
                    findings.add(line, f"{function}({args[0]}) names an undefined {kind}")
    return findings
