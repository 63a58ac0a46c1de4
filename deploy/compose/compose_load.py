"""Loading deploy/compose's files as Compose reads them: YAML, Compose's interpolation, the
Compose Specification's JSON schema; and the small accessors the checks share (a service's
environment, command, mounts, ports). Used by check_compose.py."""

import hashlib
import json
import os
import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

try:
    import jsonschema
    import yaml
except ImportError as e:  # an installation problem, said plainly
    sys.exit(f"check_compose.py: {e}; install the packages of deploy/compose/requirements.txt "
             "(bash deploy/local/install.sh puts them into $IOTFLOW_HOME/venv)")

HERE = os.path.dirname(os.path.abspath(__file__))

# The Compose Specification's JSON schema, vendored from the npm package dclint 3.1.0
# (package/schemas/compose.schema.json, a copy of compose-spec/compose-spec's
# schema/compose-spec.json; Apache-2.0). README.md says how to update it; the digest catches an
# edit by hand.
COMPOSE_SCHEMA = os.path.join(HERE, "compose-spec.json")
COMPOSE_SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


# --------------------------------------------------------------------------- loading

# Compose interpolation (https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md),
# written out because no Python package implements Compose's rules: shell-style ones (e.g.
# `expandvars`) read `$$` as the process id, where Compose reads a literal `$`. The files must
# work without an .env file, so every variable is unset here and only these forms matter:
#   $$                      a literal $
#   ${VAR:-default} / ${VAR-default}    the default
#   ${VAR:+alt} / ${VAR+alt}            empty (VAR is unset)
#   ${VAR}, $VAR, ${VAR:?err}, ${VAR?err}  an error: no default
INTERP = re.compile(r"\$(?:\$|\{([A-Za-z_]\w*)(?:(:?-)([^}]*)|(:?\+)([^}]*)|(:?\?)([^}]*))?\}|([A-Za-z_]\w*))")


def interpolate(value, where, problems):
    """`value` (a YAML tree) with Compose's interpolation applied, every variable unset."""
    if isinstance(value, dict):
        return {k: interpolate(v, where, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, where, problems) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(8)
        if m.group(2) is not None:
            return m.group(3)
        if m.group(4) is not None:
            return ""
        problems.add(where, f"${{{name}}} has no default: the file must work without an .env file")
        return ""

    return INTERP.sub(sub, value)


def load_compose(path, problems):
    rel = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.add(rel, f"does not parse as YAML: {e}")
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        problems.add(rel, "no services mapping")
        return None
    doc = interpolate(doc, rel, problems)
    # Extensions (x-*) are YAML anchors here; Compose ignores them, and so do the checks.
    return {k: v for k, v in doc.items() if not str(k).startswith("x-")}


def compose_schema_errors():
    """errors(doc) -> ["$.path: message"] against the Compose Specification's schema."""
    with open(COMPOSE_SCHEMA, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != COMPOSE_SCHEMA_SHA256:
        raise SystemExit(f"{COMPOSE_SCHEMA}: sha256 {digest}, not the vendored copy's "
                         f"{COMPOSE_SCHEMA_SHA256} (see README.md to update it)")
    schema = json.loads(raw)
    # The file says "https://json-schema.org/draft-07/schema" (no trailing #), which jsonschema
    # does not map to a draft by itself.
    cls = jsonschema.Draft7Validator
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def errors(doc):
        out = []
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            e = jsonschema.exceptions.best_match([e])
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            out.append(f"{where}: {e.message[:200]}")
        return out

    return errors


_SCHEMA_ERRORS = None


def schema_problems(doc, name, p):
    global _SCHEMA_ERRORS
    if _SCHEMA_ERRORS is None:
        _SCHEMA_ERRORS = compose_schema_errors()
    for e in _SCHEMA_ERRORS(doc):
        p.add(name, f"not valid Compose (compose-spec.json): {e}")


def load_toml(path):
    with open(path, "rb") as f:
        if tomllib is not None:
            return tomllib.load(f)
    raise SystemExit("check_compose.py needs Python 3.11+ (tomllib)")


def toml_value(raw):
    """What iotflow's config does with an environment value: a TOML value, else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


# --------------------------------------------------------------------------- accessors


def as_list(x):
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    return {str(k): "" if v is None else str(v) if not isinstance(v, bool) else str(v).lower()
            for k, v in env.items()}


def command_of(service):
    cmd = service.get("command")
    if isinstance(cmd, str):
        return cmd.split()
    return [str(c) for c in as_list(cmd)]


def mounts(service, compose_dir):
    """[(kind, host path or volume name, container path)]"""
    out = []
    for v in as_list(service.get("volumes")):
        if isinstance(v, dict):
            kind = v.get("type", "volume")
            src, dst = v.get("source", ""), v.get("target", "")
        else:
            parts = str(v).split(":")
            if len(parts) == 1:
                out.append(("anonymous", None, parts[0]))
                continue
            src, dst = parts[0], parts[1]
            kind = "bind" if src.startswith((".", "/", "~")) else "volume"
        if kind == "bind":
            src = os.path.normpath(os.path.join(compose_dir, src))
        out.append((kind, src, dst))
    return out


def parse_port(spec):
    """(host ip, host port, container port) of a short-syntax port."""
    s = str(spec).split("/")[0]
    parts = s.rsplit(":", 2)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return "", "", parts[0]


def inside(path, root):
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root + os.sep)
