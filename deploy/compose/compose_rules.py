"""iotflow's own rules for deploy/compose, beyond what the Compose schema says: images or builds
that exist, mounts inside the repository, health-gated dependencies, the monitoring ports,
Prometheus and Grafana wiring, the iotflow cluster and its configuration, the stores, the
Dockerfile. Used by check_compose.py."""

import glob
import os
import re
import shutil
import subprocess
import tempfile

import yaml

from compose_load import (as_list, command_of, env_of, inside, load_toml, mounts, parse_port,
                          toml_value)

# Restart policies Compose implements (the schema only says "a string").
RESTART = {"no", "always", "on-failure", "unless-stopped"}
PORTS = {"prometheus": 9099, "pushgateway": 9091, "grafana": 3000}


# --------------------------------------------------------------------------- generic checks


def generic(doc, name, compose_dir, root, p):
    services = doc["services"]
    declared = set((doc.get("volumes") or {}).keys())
    for sname, s in services.items():
        where = f"{name} service {sname}"
        if not isinstance(s, dict):
            p.add(where, "is not a mapping")
            continue
        if not s.get("image") and not s.get("build"):
            p.add(where, "has neither image nor build")
        build = s.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            ctx = os.path.normpath(os.path.join(compose_dir, ctx))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isdir(ctx) or not inside(ctx, root):
                p.add(where, f"build context {ctx} is not a directory of the repository")
            elif not os.path.isfile(os.path.join(ctx, dockerfile)):
                p.add(where, f"Dockerfile {dockerfile} not found in the build context")
        for f in as_list(s.get("env_file")):
            f = f if isinstance(f, str) else f.get("path", "")
            if not os.path.isfile(os.path.join(compose_dir, f)):
                p.add(where, f"env_file {f} does not exist")
        for kind, src, dst in mounts(s, compose_dir):
            if not str(dst).startswith("/"):
                p.add(where, f"mount target {dst!r} is not an absolute container path")
            if kind == "bind":
                if not inside(src, root):
                    p.add(where, f"bind mount {src} lies outside the repository")
                elif not os.path.exists(src):
                    p.add(where, f"bind-mounted path {os.path.relpath(src, root)} does not exist")
            elif kind == "volume" and src not in declared:
                p.add(where, f"named volume {src!r} is not declared under top-level volumes")
        deps = s.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else [(d, None) for d in deps]):
            if dep not in services:
                p.add(where, f"depends on unknown service {dep!r}")
                continue
            c = (cond or {}).get("condition", "service_started")  # the schema checks the value
            if c == "service_healthy" and not services[dep].get("healthcheck"):
                p.add(where, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        restart = s.get("restart")
        if restart is not None and str(restart).split(":")[0] not in RESTART:
            p.add(where, f"restart {restart!r} is not one of {sorted(RESTART)}")
        hc = s.get("healthcheck")
        if hc:
            test = hc.get("test")
            if not (isinstance(test, str) or (isinstance(test, list) and test
                                               and test[0] in ("CMD", "CMD-SHELL", "NONE"))):
                p.add(where, "healthcheck test must be a string or [CMD|CMD-SHELL, ...]")
        if s.get("network_mode") == "host":
            if s.get("ports"):
                p.add(where, "publishes ports under network_mode: host (they are ignored)")
            if s.get("networks"):
                p.add(where, "network_mode: host excludes networks")
        for spec in as_list(s.get("ports")):
            _, hp, cp = parse_port(spec)
            if not cp.isdigit() or (hp and not hp.isdigit()):
                p.add(where, f"port {spec!r} is not [ip:]host:container")


# --------------------------------------------------------------------------- monitoring


def flag(cmd, name):
    for c in cmd:
        if c.startswith(name + "="):
            return c.split("=", 1)[1]
    return None


def listen_port(address):
    return address.rsplit(":", 1)[-1] if address else ""


def check_ports(doc, name, p):
    services = doc["services"]
    for sname, port in PORTS.items():
        s = services.get(sname)
        where = f"{name} service {sname}"
        if s is None:
            p.add(name, f"no {sname} service")
            continue
        if sname == "grafana":
            listen = env_of(s).get("GF_SERVER_HTTP_PORT", "3000")
        else:
            listen = listen_port(flag(command_of(s), "--web.listen-address"))
        if listen != str(port):
            p.add(where, f"listens on port {listen or '(default)'}, not {port}")
        if s.get("network_mode") != "host":
            published = [parse_port(x) for x in as_list(s.get("ports"))]
            if (str(port), str(port)) not in [(h, c) for _, h, c in published]:
                p.add(where, f"does not publish {port}:{port} (has {as_list(s.get('ports'))})")


def container_to_host(path, service, compose_dir):
    """The host path a container path comes from through a bind mount, or None."""
    best = None
    for kind, src, dst in mounts(service, compose_dir):
        if kind != "bind":
            continue
        dst = dst.rstrip("/")
        if path == dst or path.startswith(dst + "/"):
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    if best is None:
        return None
    return best[0] + path[len(best[1]):]


def check_prometheus(doc, name, compose_dir, root, expected_config, p, promtool_runs):
    s = doc["services"].get("prometheus")
    if s is None:
        return
    where = f"{name} service prometheus"
    cfg = flag(command_of(s), "--config.file")
    if not cfg:
        p.add(where, "no --config.file flag")
        return
    host_cfg = container_to_host(cfg, s, compose_dir)
    if host_cfg is None:
        p.add(where, f"--config.file {cfg} is not bind-mounted")
        return
    if os.path.abspath(host_cfg) != os.path.abspath(os.path.join(root, expected_config)):
        p.add(where, f"config comes from {os.path.relpath(host_cfg, root)}, expected {expected_config}")
    if not os.path.isfile(host_cfg):
        return  # reported by the mount check
    try:
        conf = yaml.safe_load(open(host_cfg, encoding="utf-8"))
    except yaml.YAMLError as e:
        p.add(os.path.relpath(host_cfg, root), f"does not parse: {e}")
        return
    cdir = os.path.dirname(cfg)
    for pattern in (conf or {}).get("rule_files") or []:
        cpath = pattern if pattern.startswith("/") else f"{cdir}/{pattern}"
        hpath = container_to_host(cpath, s, compose_dir)
        if hpath is None:
            p.add(where, f"rule file {pattern} ({cpath}) is not mounted into the container")
        elif not glob.glob(hpath):
            p.add(where, f"rule file {pattern} matches nothing in {os.path.relpath(hpath, root)}")
    for job in (conf or {}).get("scrape_configs") or []:
        for sd in job.get("file_sd_configs") or []:
            for pattern in sd.get("files") or []:
                cpath = pattern if pattern.startswith("/") else f"{cdir}/{pattern}"
                if container_to_host(os.path.dirname(cpath), s, compose_dir) is None:
                    p.add(where, f"file_sd directory of {pattern} is not mounted into the container")
    promtool_runs.append((host_cfg, s, compose_dir, cfg))


def promtool_check(runs, root, p):
    """`promtool check config` of each Prometheus config, laid out as in its container."""
    promtool = shutil.which("promtool")
    if not promtool:
        return "promtool not installed: config not checked by promtool"
    seen = set()
    for host_cfg, service, compose_dir, cfg in runs:
        if host_cfg in seen:
            continue
        seen.add(host_cfg)
        with tempfile.TemporaryDirectory() as tmp:
            # Recreate the container's /etc/prometheus tree from the bind mounts.
            cdir = os.path.dirname(cfg)
            for kind, src, dst in mounts(service, compose_dir):
                if kind != "bind" or not (dst == cdir or dst.startswith(cdir + "/")):
                    continue
                target = os.path.join(tmp, os.path.relpath(dst, cdir))
                if os.path.isdir(src):
                    shutil.copytree(src, target)
                elif os.path.isfile(src):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy(src, target)
            r = subprocess.run([promtool, "check", "config", os.path.join(tmp, os.path.basename(cfg))],
                               capture_output=True, text=True)
            if r.returncode != 0:
                p.add(os.path.relpath(host_cfg, root),
                      "promtool check config failed:\n" + (r.stdout + r.stderr).strip())
    return f"promtool check config: {len(seen)} config(s) pass"


def check_grafana(doc, name, compose_dir, root, p):
    s = doc["services"].get("grafana")
    if s is None:
        return
    where = f"{name} service grafana"
    want = {
        "/etc/grafana/provisioning": os.path.join(root, "deploy", "grafana", "provisioning"),
    }
    provider = os.path.join(root, "deploy", "grafana", "provisioning", "dashboards", "iotflow.yml")
    try:
        prov = yaml.safe_load(open(provider, encoding="utf-8"))
        path = prov["providers"][0]["options"]["path"]
        want[path] = os.path.join(root, "deploy", "grafana", "dashboards")
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as e:
        p.add(where, f"cannot read the dashboard provider path from {provider}: {e}")
    binds = {dst.rstrip("/"): src for kind, src, dst in mounts(s, compose_dir) if kind == "bind"}
    for dst, src in want.items():
        if dst not in binds:
            p.add(where, f"{os.path.relpath(src, root)} is not mounted at {dst}")
        elif os.path.abspath(binds[dst]) != os.path.abspath(src):
            p.add(where, f"{dst} comes from {os.path.relpath(binds[dst], root)}, expected {os.path.relpath(src, root)}")
    datasources = os.path.join(root, "deploy", "grafana", "provisioning", "datasources", "iotflow.yml")
    env = env_of(s)
    try:
        text = open(datasources, encoding="utf-8").read()
    except OSError as e:
        p.add(where, f"cannot read {datasources}: {e}")
        return
    text = "\n".join(ln.split("#", 1)[0] for ln in text.splitlines())  # comments
    for var in sorted(set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", text))):
        if not env.get(var):
            p.add(where, f"the datasource file uses ${var}, which the service does not set")
    if "http://prometheus:9099" in text:
        if s.get("network_mode") == "host":
            hosts = [str(h).replace("=", ":") for h in as_list(s.get("extra_hosts"))]
            if not any(h.split(":", 1)[0] == "prometheus" for h in hosts):
                p.add(where, "host networking without an extra_hosts entry for prometheus")
        elif "prometheus" not in doc["services"]:
            p.add(where, "the datasource needs a service named prometheus")


# --------------------------------------------------------------------------- iotflow


def config_keys(example):
    """{dotted key: default value} of deploy/iotflow.example.toml, and its open tables."""
    keys, open_tables = {}, set()

    def walk(table, prefix):
        for k, v in table.items():
            dotted = f"{prefix}{k}"
            if isinstance(v, dict):
                if not v:
                    open_tables.add(dotted)  # e.g. [kafka.properties]: any key
                walk(v, dotted + ".")
            else:
                keys[dotted] = v

    walk(load_toml(example), "")
    return keys, open_tables


def same_type(default, value):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(default) is type(value)


def check_iotflow_env(doc, name, root, p):
    example = os.path.join(root, "deploy", "iotflow.example.toml")
    keys, open_tables = config_keys(example)
    used = 0
    for sname, s in doc["services"].items():
        for var, raw in env_of(s).items():
            if not var.startswith("IOTFLOW__"):
                continue
            used += 1
            where = f"{name} service {sname} {var}"
            parts = var[len("IOTFLOW__"):].split("__")
            if any(not x for x in parts):
                p.add(where, "malformed variable name")
                continue
            dotted = ".".join(x.lower() for x in parts)
            if dotted in keys:
                value = toml_value(raw)
                if not same_type(keys[dotted], value):
                    p.add(where, f"value {raw!r} reads as {type(value).__name__}, but {dotted} is a "
                                 f"{type(keys[dotted]).__name__} (deploy/iotflow.example.toml)")
            elif not any(dotted.startswith(t + ".") for t in open_tables):
                p.add(where, f"{dotted} is not a key of deploy/iotflow.example.toml")
    return used


def check_cluster(doc, name, compose_dir, root, prom_config, p):
    """The `iotflow run` processes, the hostfile, and the Prometheus targets agree."""
    services = doc["services"]
    runs = {}
    for sname, s in services.items():
        cmd = command_of(s)
        if cmd[:1] != ["run"] or s.get("image", "").split(":")[0] != "iotflow":
            continue
        opts = {}
        i = 1
        while i < len(cmd):
            if cmd[i] in ("-n", "-p", "-h", "-w", "-c") and i + 1 < len(cmd):
                opts[cmd[i]] = cmd[i + 1]
                i += 2
            else:
                i += 1
        runs[sname] = opts
    if not runs:
        p.add(name, "no `iotflow run` service")
        return
    for flag_ in ("-n", "-p", "-h", "-w"):
        for sname, opts in runs.items():
            if flag_ not in opts:
                p.add(f"{name} service {sname}", f"`run` without {flag_}")
    if p:
        return
    ns = {opts["-n"] for opts in runs.values()}
    hs = {opts["-h"] for opts in runs.values()}
    if len(ns) != 1 or len(hs) != 1:
        p.add(name, f"the run services disagree on -n {sorted(ns)} or -h {sorted(hs)}")
        return
    n = int(ns.pop())
    by_process = {}
    for sname, opts in runs.items():
        by_process.setdefault(int(opts["-p"]), []).append(sname)
        if int(opts["-w"]) < 1:
            p.add(f"{name} service {sname}", "-w must be at least 1")
    if sorted(by_process) != list(range(n)) or any(len(v) > 1 for v in by_process.values()):
        p.add(name, f"-n {n} needs one service per process 0..{n - 1}, have {by_process}")
        return
    hostfile_c = hs.pop()
    for sname in runs:
        src = container_to_host(hostfile_c, services[sname], compose_dir)
        if src is None:
            p.add(f"{name} service {sname}", f"hostfile {hostfile_c} is not mounted")
            return
    lines = [ln.strip() for ln in open(src, encoding="utf-8") if ln.strip()]
    if len(lines) != n:
        p.add(os.path.relpath(src, root), f"has {len(lines)} lines for {n} processes")
        return
    # Other containers reach a service by its service name (Compose's DNS), not its hostname.
    for proc, (sname,) in sorted(by_process.items()):
        host = lines[proc].rsplit(":", 1)[0]
        if host != sname:
            p.add(os.path.relpath(src, root),
                  f"line {proc + 1} names {host}, but process {proc} is service {sname}")

    # Metrics: process p listens on metrics.listen + p; Prometheus must scrape exactly those.
    conf = yaml.safe_load(open(prom_config, encoding="utf-8")) or {}
    targets = {}
    for job in conf.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for t in sc.get("targets") or []:
                targets[t] = job
    for proc, (sname,) in sorted(by_process.items()):
        listen = env_of(services[sname]).get("IOTFLOW__METRICS__LISTEN", "127.0.0.1:9249")
        host, port = listen.rsplit(":", 1)
        if host not in ("0.0.0.0", "[::]", "::"):
            p.add(f"{name} service {sname}", f"metrics listen on {host}: unreachable from Prometheus")
        target = f"{sname}:{int(port) + proc}"
        job = targets.get(target)
        if job is None:
            p.add(os.path.relpath(prom_config, root), f"does not scrape process {proc} at {target}")
        elif not job["job_name"].startswith("iotflow"):
            p.add(os.path.relpath(prom_config, root), f"job {job['job_name']} should start with iotflow")
    publishers = [sname for sname, s in services.items() if command_of(s)[:1] == ["publish-devices"]]
    if not publishers:
        p.add(name, "no `iotflow publish-devices` service")
    for sname in publishers:
        listen = env_of(services[sname]).get("IOTFLOW__PUBLISHER__METRICS_LISTEN", "127.0.0.1:9250")
        target = f"{sname}:{listen.rsplit(':', 1)[1]}"
        if not listen.startswith(("0.0.0.0:", "[::]:")):
            p.add(f"{name} service {sname}", f"publisher metrics on {listen}: unreachable from Prometheus")
        if target not in targets:
            p.add(os.path.relpath(prom_config, root), f"does not scrape the publisher at {target}")
    push = [job for t, job in targets.items() if t.startswith("pushgateway:")]
    if not push or not push[0].get("honor_labels"):
        p.add(os.path.relpath(prom_config, root), "must scrape pushgateway:9091 with honor_labels: true")
    if not any(command_of(s)[:1] == ["gen"] for s in services.values()):
        p.add(name, "no `iotflow gen` simulator service")
    # The work-time job pushes its run metrics to the stack's Pushgateway.
    worktime = [sname for sname, s in services.items()
                if command_of(s)[:2] == ["worktime", "--schedule"]]
    if not worktime:
        p.add(name, "no `iotflow worktime --schedule` service")
    push_port = listen_port(flag(command_of(services.get("pushgateway") or {}), "--web.listen-address"))
    for sname in worktime:
        url = env_of(services[sname]).get("IOTFLOW__WORKTIME__PUSHGATEWAY_URL", "")
        if url.rstrip("/") != f"http://pushgateway:{push_port}":
            p.add(f"{name} service {sname}",
                  f"pushes to {url or 'the default 127.0.0.1:9091'}, not the pushgateway service "
                  f"(http://pushgateway:{push_port})")


def check_stores(doc, name, p):
    services = doc["services"]

    def image(sname):
        return str((services.get(sname) or {}).get("image", ""))

    expect = {
        "kafka": r"^apache/kafka:\d", "mysql": r"^mysql:8(\.\d+)*$",
        "clickhouse": r"^clickhouse/clickhouse-server:24(\.\d+)*$",
        "elasticsearch": r"^docker\.elastic\.co/elasticsearch/elasticsearch:8\.\d+\.\d+$",
    }
    for sname, pattern in expect.items():
        if not re.search(pattern, image(sname)):
            p.add(f"{name} service {sname}", f"image {image(sname)!r} does not match {pattern}")
    kenv = env_of(services.get("kafka") or {})
    if "controller" not in kenv.get("KAFKA_PROCESS_ROLES", "") or "broker" not in kenv.get("KAFKA_PROCESS_ROLES", ""):
        p.add(f"{name} service kafka", "must run KRaft as broker and controller (KAFKA_PROCESS_ROLES)")
    eenv = env_of(services.get("elasticsearch") or {})
    if eenv.get("discovery.type") != "single-node":
        p.add(f"{name} service elasticsearch", "discovery.type must be single-node")
    if eenv.get("xpack.security.enabled") != "false":
        p.add(f"{name} service elasticsearch", "xpack.security.enabled must be false (local stack)")


def check_same_images(docs, p):
    """The monitoring services run the same images in both files."""
    names = list(docs)
    for sname in PORTS:
        images = {n: str(docs[n]["services"].get(sname, {}).get("image")) for n in names}
        if len(set(images.values())) > 1:
            p.add(sname, f"images differ between the compose files: {images}")


def check_dockerfile(root, p):
    path = os.path.join(root, "deploy", "compose", "Dockerfile")
    rel = "deploy/compose/Dockerfile"
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        p.add(rel, f"cannot read: {e}")
        return
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    if len(froms) < 2:
        p.add(rel, "is not multi-stage (build and runtime)")
        return
    m = re.match(r"FROM\s+rust:(\d+)\.(\d+)\S*\s+AS\s+(\w+)", froms[0], re.I)
    if not m:
        p.add(rel, f"the first stage must be FROM rust:X.Y... AS build, is {froms[0]!r}")
    else:
        cargo = load_toml(os.path.join(root, "Cargo.toml"))
        rv = str(cargo.get("workspace", {}).get("package", {}).get("rust-version", "0.0"))
        want = tuple(int(x) for x in rv.split(".")[:2])
        if (int(m.group(1)), int(m.group(2))) < want:
            p.add(rel, f"rust:{m.group(1)}.{m.group(2)} is older than the workspace rust-version {rv}")
        if not any(re.search(rf"COPY\s+--from={m.group(3)}\b", ln) for ln in lines):
            p.add(rel, f"the runtime stage copies nothing from the {m.group(3)} stage")
    if not re.match(r"FROM\s+debian:\S*-slim\b", froms[-1], re.I):
        p.add(rel, f"the runtime stage should be a debian *-slim image, is {froms[-1]!r}")
    runs = " ".join(ln for ln in lines if ln.upper().startswith("RUN "))
    if not re.search(r"\bcmake\b", runs):
        p.add(rel, "does not install cmake (rdkafka's cmake-build feature needs it)")
    if not re.search(r"libcurl4-openssl-dev", runs):
        p.add(rel, "does not install libcurl4-openssl-dev (librdkafka's CMake config includes curl.h)")
    if not re.search(r"cargo build\b[^&;]*--release[^&;]*-p iotflow\b|cargo build\b[^&;]*-p iotflow\b[^&;]*--release", runs):
        p.add(rel, "does not run `cargo build --release -p iotflow`")
    if not any(re.match(r'ENTRYPOINT\s+\[\s*"(/usr/local/bin/)?iotflow"\s*\]', ln) for ln in lines):
        p.add(rel, 'the entrypoint must be ["iotflow"]')
    ignore = os.path.join(root, "deploy", "compose", "Dockerfile.dockerignore")
    try:
        patterns = {ln.strip().strip("/") for ln in open(ignore, encoding="utf-8")
                    if ln.strip() and not ln.startswith("#")}
    except OSError:
        patterns = set()
    for must in ("target", ".git", ".local"):
        if must not in patterns:
            p.add("deploy/compose/Dockerfile.dockerignore", f"must exclude {must}/ from the build context")
