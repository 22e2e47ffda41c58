#!/usr/bin/env bash
# docker_test.sh SOURCE_DIR CHECK_CONFIG — docker/ checked without a Docker engine (none runs
# on the development and CI machines, so nothing here builds or starts a container):
#  (a) docker-compose (v1, Debian's package) validates docker/compose.yaml against the Compose
#      schema (`config -q`, which needs no engine); without it the test says so and goes on;
#  (b) every docker/config/*.ini loads with the library's own parser (CHECK_CONFIG, built from
#      tests/check_config.c), which also prints what each file resolved to;
#  (c) the compose file's structure, read with python3's yaml module (duplicate keys refused):
#      the services, the files they mount and build from exist, the order (postgres healthy ->
#      migrate completed -> cores), every core's [bus] lists both forwarders' endpoints as the
#      forwarders bind them, its dsn reaches the postgres service as the login role that
#      migrate creates, without a password, and its healthcheck runs `cgctl -c CONFIG health`
#      on the file mounted for it and probes its /metrics ([daemon] metrics_listen); every
#      forwarder serves --metrics and its healthcheck probes that port (docker/metrics-probe.sh);
#      the scripts parse (sh -n, bash -n) and the entry point dispatches;
#  (d) the Dockerfile: Debian 12 stages, Debian packages only (no curl, wget, git, pip, npm,
#      ...), a Release build with tests off installed into /opt/coregroup, a slim runtime with
#      the runtime libraries, a non-root user and an entry point; compose's build targets exist.
set -euo pipefail
src=$(cd "$1" && pwd)
check_config=$2
docker=$src/docker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "docker: $*" >&2
  exit 1
}

for f in Dockerfile compose.yaml README.md docker-entrypoint.sh metrics-probe.sh; do
  [ -f "$docker/$f" ] || fail "docker/$f is missing"
done

# (a) the Compose schema, with the passwords' development defaults (not the caller's values)
if command -v docker-compose >/dev/null 2>&1; then
  if ! out=$(cd "$docker" && env -u CG_PG_PASSWORD -u CG_CORE_PASSWORD -u COMPOSE_FILE \
    -u COMPOSE_PROJECT_NAME docker-compose -f compose.yaml config -q 2>&1); then
    fail "docker-compose rejects docker/compose.yaml: $out"
  fi
  validator="docker-compose $(docker-compose version --short 2>/dev/null) validated the schema"
else
  validator="docker-compose not installed (tests/bootstrap.sh installs it): schema not validated"
  echo "docker: $validator" >&2
fi

# (b) every repository.ini under docker/config/, loaded by the library
shopt -s nullglob
configs=("$docker"/config/*.ini)
[ ${#configs[@]} -gt 0 ] || fail "no docker/config/*.ini"
if ! "$check_config" "${configs[@]}" >"$tmp/configs.tsv" 2>"$tmp/configs.err"; then
  cat "$tmp/configs.err" >&2
  fail "a docker/config/*.ini does not load (above: file, line and key)"
fi

# the scripts parse, and the entry point runs coregroupd for options and any program by name
for f in "$docker/docker-entrypoint.sh" "$docker"/migrate/*.sh; do
  sh -n "$f" || fail "${f#"$src"/}: shell syntax error"
done
bash -n "$docker/metrics-probe.sh" || fail "docker/metrics-probe.sh: shell syntax error"
mkdir "$tmp/bin"
for p in coregroupd cg-busd; do
  printf '#!/bin/sh\necho %s "$@"\n' "$p" >"$tmp/bin/$p"
  chmod +x "$tmp/bin/$p"
done
ep() { PATH="$tmp/bin:$PATH" sh "$docker/docker-entrypoint.sh" "$@"; }
[ "$(ep -c /x.ini)" = "coregroupd -c /x.ini" ] || fail "entry point: options do not go to coregroupd"
[ "$(ep)" = "coregroupd" ] || fail "entry point: no arguments does not run coregroupd"
[ "$(ep cg-busd --frontend f)" = "cg-busd --frontend f" ] || fail "entry point: cg-busd not run"

# (c) and (d)
py=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' 2>/dev/null; then
    py=$p
    break
  fi
done
[ -n "$py" ] || fail "python3 with the yaml module is needed (Debian: python3-yaml, which docker-compose depends on)"

"$py" - "$docker" "$tmp/configs.tsv" <<'PY'
import os, re, shlex, sys
import yaml

docker, tsv = sys.argv[1], sys.argv[2]
src = os.path.dirname(docker)
errors = []

def err(msg):
    if msg not in errors:
        errors.append(msg)

# ---- the compose file, refusing duplicate keys (PyYAML would keep the last silently) --------
class Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for k, _ in node.value:
            if k.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(k, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key %r" % (key,), k.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

with open(os.path.join(docker, "compose.yaml")) as f:
    try:
        compose = yaml.load(f, Loader=Loader)
    except yaml.YAMLError as e:
        print("docker: compose.yaml: %s" % e, file=sys.stderr)
        sys.exit(1)
services = compose.get("services") or {}

# what check_config printed: file -> key -> [values]
configs = {}
with open(tsv) as f:
    for line in f:
        path, key, value = line.rstrip("\n").split("\t", 2)
        configs.setdefault(os.path.realpath(path), {}).setdefault(key, []).append(value)

def one(cfg, key):
    v = cfg.get(key)
    return v[0] if v else None

def argv(value):
    """A command, entrypoint or healthcheck test as a list of words."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    words = [str(w) for w in value]
    if words and words[0] in ("CMD", "CMD-SHELL"):
        words = words[1:] if words[0] == "CMD" else shlex.split(" ".join(words[1:]))
    return words

def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) if "=" in item else (item, "") for item in e)
    return {str(k): "" if v is None else str(v) for k, v in e.items()}

def depends(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {name: "service_started" for name in d}
    return {name: (c or {}).get("condition", "service_started") for name, c in d.items()}

def mounts(name, svc):
    """(host path, container path) of every bind mount; the host path must exist."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") != "bind":
                continue
            host, target = v.get("source", ""), v.get("target", "")
        else:
            parts = str(v).split(":")
            if len(parts) < 2 or not parts[0].startswith((".", "/", "~")):
                continue  # a named volume
            host, target = parts[0], parts[1]
        path = os.path.normpath(os.path.join(docker, os.path.expanduser(host)))
        if not os.path.exists(path):
            err("%s: mounts %s, which does not exist" % (name, host))
        out.append((path, target))
    return out

expected = {"postgres", "migrate", "busd-1", "busd-2", "core-a", "core-b", "core-c"}
missing = expected - set(services)
if missing:
    err("services missing: %s" % ", ".join(sorted(missing)))
cores = sorted(n for n in services if n.startswith("core-"))
busds = sorted(n for n in services if n.startswith("busd-"))
if len(busds) < 2:
    err("fewer than two forwarders (busd-*)")

# every build: the context and Dockerfile exist, the target is a stage of that Dockerfile
dockerfiles = {}
for name, svc in services.items():
    b = svc.get("build")
    if b is None:
        if not svc.get("image"):
            err("%s: neither image nor build" % name)
        continue
    if isinstance(b, str):
        b = {"context": b}
    ctx = os.path.normpath(os.path.join(docker, b.get("context", ".")))
    df = os.path.normpath(os.path.join(ctx, b.get("dockerfile", "Dockerfile")))
    if not os.path.isdir(ctx):
        err("%s: build context %s does not exist" % (name, b.get("context")))
    if not os.path.isfile(df):
        err("%s: Dockerfile %s does not exist" % (name, b.get("dockerfile")))
    else:
        dockerfiles.setdefault(df, set()).add(b.get("target"))
    mounts(name, svc)
for name, svc in services.items():
    for f in svc.get("env_file") or []:
        f = f if isinstance(f, str) else f.get("path", "")
        if not os.path.exists(os.path.join(docker, f)):
            err("%s: env_file %s does not exist" % (name, f))
    for dep in depends(svc):
        if dep not in services:
            err("%s: depends on %s, which is no service" % (name, dep))

# postgres: a pg_isready healthcheck; the database and the DBA's role
pg = services.get("postgres", {})
pg_test = argv((pg.get("healthcheck") or {}).get("test"))
if "pg_isready" not in pg_test:
    err("postgres: the healthcheck does not run pg_isready (%s)" % pg_test)
pg_db = env(pg).get("POSTGRES_DB", env(pg).get("POSTGRES_USER", "postgres"))

# migrate: after postgres is healthy, runs cg-migrate up and maps the cores' login role to
# their group (cg-migrate map-role: row-level security confines the role to that group)
mig = services.get("migrate", {})
if depends(mig).get("postgres") != "service_healthy":
    err("migrate: does not wait for postgres to be healthy (depends_on condition)")
mig_text = " ".join(argv(mig.get("entrypoint")) + argv(mig.get("command")))
for path, _ in mounts("migrate", mig):
    if os.path.isfile(path):  # what runs, not what the comments say
        with open(path) as f:
            mig_text += "".join("\n" + line for line in f
                                if not line.lstrip().startswith(("#", "--")))
if not re.search(r"\bcg-migrate\b[^\n]*\bup\b", mig_text):
    err("migrate: neither its command nor its mounted scripts run `cg-migrate ... up`")
if not re.search(r"\bcg-migrate\b[^\n]*\bmap-role\b", mig_text):
    err("migrate: neither its command nor its mounted scripts run `cg-migrate map-role ROLE "
        "GROUP` (the cores' login must be mapped to their group)")
core_role = env(mig).get("CG_CORE_ROLE")
if not core_role:
    err("migrate: CG_CORE_ROLE (the cores' login role) is not set")
core_group = env(mig).get("CG_CORE_GROUP")
if not core_group:
    err("migrate: CG_CORE_GROUP (the group CG_CORE_ROLE is mapped to) is not set")
if (mig.get("restart") or "no") not in ("no", "on-failure"):
    err("migrate: a one-shot service must not restart always (restart: %s)" % mig.get("restart"))

# the forwarders: where they bind; the cores connect to <service>:<port>
frontends, backends = {}, {}
for b in busds:
    words = argv(services[b].get("command"))
    if "cg-busd" not in words:
        err("%s: does not run cg-busd (%s)" % (b, words))
        continue
    host = services[b].get("hostname", b)
    for opt, table in (("--frontend", frontends), ("--backend", backends)):
        if opt not in words or words.index(opt) + 1 >= len(words):
            err("%s: no %s" % (b, opt))
            continue
        m = re.fullmatch(r"tcp://(?:0\.0\.0\.0|\*):(\d+)", words[words.index(opt) + 1])
        if not m:
            err("%s: %s must bind tcp://0.0.0.0:PORT, so that other hosts can reach it" % (b, opt))
            continue
        table[b] = "tcp://%s:%s" % (host, m.group(1))
    # its /metrics, and a healthcheck that reads it
    if "--metrics" not in words or words.index("--metrics") + 1 >= len(words):
        err("%s: no --metrics endpoint" % b)
    else:
        mm = re.fullmatch(r"0\.0\.0\.0:(\d+)", words[words.index("--metrics") + 1])
        test = argv((services[b].get("healthcheck") or {}).get("test"))
        if not mm:
            err("%s: --metrics must bind 0.0.0.0:PORT" % b)
        elif "metrics-probe.sh" not in test or mm.group(1) not in test:
            err("%s: the healthcheck must run metrics-probe.sh on its --metrics port %s (%s)"
                % (b, mm.group(1), test))

# the cores
names, groups = {}, set()
for c in cores:
    svc = services[c]
    words = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    if "coregroupd" not in words or "-c" not in words:
        err("%s: does not run coregroupd -c FILE (%s)" % (c, words))
        continue
    conf_path = words[words.index("-c") + 1] if words.index("-c") + 1 < len(words) else ""
    host_files = [h for h, t in mounts(c, svc) if t == conf_path]
    if not host_files:
        err("%s: nothing is mounted at its configuration %s" % (c, conf_path))
        continue
    host_file = host_files[0]
    if os.path.dirname(host_file) != os.path.join(docker, "config"):
        err("%s: its configuration %s is not under docker/config/" % (c, host_file))
    cfg = configs.get(os.path.realpath(host_file))
    if cfg is None:
        err("%s: %s was not loaded by check_config" % (c, host_file))
        continue
    rel = os.path.relpath(host_file, src)

    hc = svc.get("healthcheck") or {}
    test = argv(hc.get("test"))
    if not ("cgctl" in test and "health" in test and "-c" in test
            and test.index("-c") + 1 < len(test) and test[test.index("-c") + 1] == conf_path):
        err("%s: the healthcheck must run `cgctl -c %s health` (%s)" % (c, conf_path, test))
    metrics = one(cfg, "daemon.metrics_listen") or ""
    mm = re.fullmatch(r"0\.0\.0\.0:(\d+)", metrics)
    if not mm:
        err("%s: [daemon] metrics_listen %r must bind 0.0.0.0:PORT" % (rel, metrics))
    elif "metrics-probe.sh" not in test or mm.group(1) not in test:
        err("%s: the healthcheck must probe its /metrics on port %s (%s)" % (c, mm.group(1), test))
    for k in ("interval", "timeout", "retries"):
        if k not in hc:
            err("%s: the healthcheck sets no %s" % (c, k))

    deps = depends(svc)
    if deps.get("migrate") != "service_completed_successfully":
        err("%s: does not wait for migrate to complete successfully" % c)
    for b in busds:
        if b not in deps:
            err("%s: does not depend on %s" % (c, b))

    name = one(cfg, "core.name")
    if name != c:
        err("%s: %s names the core %r, not %r" % (c, rel, name, c))
    if name in names:
        err("%s: core name %r is also %s's" % (c, name, names[name]))
    names[name] = c
    groups.add(one(cfg, "core.group"))
    pub, sub = set(cfg.get("bus.publish", [])), set(cfg.get("bus.subscribe", []))
    for b in busds:
        if b in frontends and frontends[b] not in pub:
            err("%s: [bus] publish does not list %s's frontend %s (has %s)"
                % (rel, b, frontends[b], sorted(pub)))
        if b in backends and backends[b] not in sub:
            err("%s: [bus] subscribe does not list %s's backend %s (has %s)"
                % (rel, b, backends[b], sorted(sub)))
    if one(cfg, "repository.dsn.host") != "postgres":
        err("%s: [repository] dsn host is %r, not the postgres service"
            % (rel, one(cfg, "repository.dsn.host")))
    if one(cfg, "repository.dsn.dbname") != pg_db:
        err("%s: [repository] dsn dbname is %r, postgres creates %r"
            % (rel, one(cfg, "repository.dsn.dbname"), pg_db))
    user = one(cfg, "repository.dsn.user")
    if user != core_role or user == env(pg).get("POSTGRES_USER", "postgres"):
        err("%s: [repository] dsn user is %r: the cores must log in as the role migrate "
            "creates (%r), a member of coregroup_app and no superuser" % (rel, user, core_role))
    if core_group and one(cfg, "core.group") != core_group:
        err("%s: [core] group is %r, but its login %r is mapped to %r (CG_CORE_GROUP): the "
            "core would refuse to start" % (rel, one(cfg, "core.group"), user, core_group))
    if "repository.dsn.password" in cfg:
        err("%s: a password in the dsn: give it through PGPASSWORD instead" % rel)
    if not env(svc).get("PGPASSWORD"):
        err("%s: no PGPASSWORD in its environment, and the dsn has no password" % c)
    listen = one(cfg, "daemon.listen") or ""
    if not re.fullmatch(r"tcp://0\.0\.0\.0:\d+", listen):
        err("%s: [daemon] listen %r must bind tcp://0.0.0.0:PORT (reachable from other "
            "containers, and connectable by cgctl in its own)" % (rel, listen))
    else:
        port = listen.rsplit(":", 1)[1]
        mport = mm.group(1) if mm else None
        for p in svc.get("ports") or []:
            if str(p).split("/")[0].rsplit(":", 1)[-1] not in (port, mport):
                err("%s: publishes container port of %r, but the core listens on %s (and %s)"
                    % (c, p, port, mport))
if len(groups) != 1 or None in groups:
    err("the cores are not all of one group: %s" % sorted(map(str, groups)))
elif groups != {"payments"}:
    err("the cores' group is %s, not payments" % groups.pop())

# ---- the Dockerfile -------------------------------------------------------------------------
def instructions(path):
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, cur = [], ""
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not cur and (not s or s.startswith("#")):
                continue
            if cur and s.startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            word, _, rest = cur.partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out

summary = []
for df, targets in sorted(dockerfiles.items()):
    rel = os.path.relpath(df, src)
    stages, order, stage = {}, [], None
    for ins, args in instructions(df):
        if ins == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            if not m:
                err("%s: FROM %s" % (rel, args))
                continue
            stage = (m.group(2) or "stage%d" % len(order)).lower()
            stages[stage] = {"from": m.group(1), "ins": []}
            order.append(stage)
            continue
        if stage is None:
            if ins != "ARG":
                err("%s: %s before FROM" % (rel, ins))
            continue
        stages[stage]["ins"].append((ins, args))

    def chain(s):
        seen = []
        while s in stages and s not in seen:
            seen.append(s)
            s = stages[s]["from"].lower()
        return seen, s  # the stages from s back, and the base image

    allowed = {"debian:12", "debian:bookworm", "debian:12-slim", "debian:bookworm-slim"}
    for s in order:
        base = stages[s]["from"]
        if base.lower() not in stages and base not in allowed:
            err("%s: stage %s is FROM %s, not Debian 12 (bookworm)" % (rel, s, base))
    if not order or stages[order[0]]["from"] not in ("debian:12", "debian:bookworm"):
        err("%s: the first (build) stage is not FROM debian:12" % rel)
    for t in targets:
        if t and t.lower() not in stages:
            err("%s: compose builds target %r, which is no stage of it" % (rel, t))

    for s in order:
        for ins, args in stages[s]["ins"]:
            if ins == "ADD":
                err("%s: ADD %s (use COPY; nothing is fetched but Debian packages)" % (rel, args))
            if ins == "RUN":
                bad = re.findall(r"(?<![\w./-])(curl|wget|git|pip3?|pipx|npm|npx|yarn|gem|cargo"
                                 r"|easy_install|go\s+(?:get|install)|dpkg\s+-i)(?![\w.-])", args)
                if bad:
                    err("%s: stage %s fetches with %s: only Debian packages (apt-get) may be "
                        "installed" % (rel, s, ", ".join(sorted(set(bad)))))
                if re.search(r"\b(?:https?|ftp)://", args):
                    err("%s: stage %s RUN names a URL" % (rel, s))
                for m in re.finditer(r"apt-get\s+install\s+([^;&|]*)", args):
                    for pkg in m.group(1).split():
                        if not pkg.startswith("-") and not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+(=\S+)?", pkg):
                            err("%s: stage %s installs %r, not a Debian package name"
                                % (rel, s, pkg))
            if ins == "COPY" and "--from" not in args:
                words = [w for w in shlex.split(args) if not w.startswith("--")]
                for source in words[:-1]:
                    if not os.path.exists(os.path.join(src, source)):
                        err("%s: COPY %s: no such file in the context" % (rel, source))

    def text(stage_names, kind):
        return "\n".join(a for s in stage_names for i, a in stages[s]["ins"] if i == kind)

    if order:
        build = order[0]
        run = text([build], "RUN")
        for want in ("-DCMAKE_BUILD_TYPE=Release", "-DCG_BUILD_TESTS=OFF", "cmake --install",
                     "/opt/coregroup"):
            if want not in run:
                err("%s: the build stage does not run %r" % (rel, want))
        final, base = chain(order[-1])
        if base not in ("debian:12-slim", "debian:bookworm-slim"):
            err("%s: the default (last) stage is not based on debian:12-slim" % rel)
        run = text(final, "RUN")
        for lib in ("libpq5", "libzmq5", "libcjson1", "libinih1"):
            if not re.search(r"(?<![\w.-])%s(?![\w.-])" % re.escape(lib), run):
                err("%s: the runtime stage does not install %s" % (rel, lib))
        if re.search(r"\S+-dev\b|build-essential|\bcmake\b", run):
            err("%s: the runtime stage installs build tools or -dev packages" % rel)
        copies = text(final, "COPY")
        if not re.search(r"--from=%s\s+/opt/coregroup\b" % re.escape(build), copies, re.I):
            err("%s: the runtime stage does not COPY --from=%s /opt/coregroup" % (rel, build))
        users = [a for s in reversed(final) for i, a in stages[s]["ins"] if i == "USER"]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            err("%s: the runtime stage runs as root (no USER, or USER root)" % rel)
        if not any(i == "ENTRYPOINT" for s in final for i, _ in stages[s]["ins"]):
            err("%s: the runtime stage has no ENTRYPOINT" % rel)
    summary.append("%s: stages %s (default %s, from %s); Debian packages only"
                   % (rel, ", ".join(order), order[-1] if order else "-",
                      stages[order[-1]]["from"] if order else "-"))

# ---- the README names every service -----------------------------------------------------
with open(os.path.join(docker, "README.md")) as f:
    readme = f.read()
if "docker compose -f docker/compose.yaml up --build" not in readme:
    err("docker/README.md: no `docker compose -f docker/compose.yaml up --build`")
for name in services:
    if name not in readme:
        err("docker/README.md does not mention the service %s" % name)

if errors:
    for e in errors:
        print("docker: " + e, file=sys.stderr)
    sys.exit(1)
print("docker: compose: %d services (%s); cores %s of group payments on forwarders %s"
      % (len(services), ", ".join(sorted(services)), ", ".join(cores), ", ".join(busds)))
for line in summary:
    print("docker: " + line)
PY
echo "docker: ${#configs[@]} configuration file(s) loaded by the library: ${configs[*]#"$docker"/}"
echo "docker: $validator"
echo "docker: passed"
