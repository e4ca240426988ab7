"""The deployment files agree with the code.

docker-compose.yml and the Dockerfile are checked, without a Docker engine, against
pyproject.toml (the image's `brain` console script), the typer app behind it
(service.cli: every command a container runs must parse) and the settings class
(service.settings.Settings: every BRAIN_* variable must be one of its fields).
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"

APP_SERVICES = ("api", "worker", "beat")  # built from ./Dockerfile, run `brain ...`
ALL_SERVICES = (*APP_SERVICES, "postgres", "redis")
DATA_DIR = "/data"
ENV_PREFIX = "BRAIN_"
# variables compose requires (`${X:?message}`): `docker compose` refuses to run without them, so the
# tests read the file as an operator who set them would
REQUIRED_ENV = {"BRAIN_ADMIN_KEY": "compose-test-admin-key-0123456789abcdef"}


# --- readers ---------------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: object) -> object:
    """Compose's variable substitution as with an empty environment (but REQUIRED_ENV): `${X:-d}`
    gives d, `${X:?message}` the value in REQUIRED_ENV (fails for any other variable)."""
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        op = m["op"] or ""
        if op.endswith("-"):
            return m["arg"]
        if op.endswith("?"):
            if m["braced"] in REQUIRED_ENV:
                return REQUIRED_ENV[m["braced"]]
            pytest.fail(f"{value!r}: ${{{m['braced']}}} is required and has no default")
        return ""

    return _VAR.sub(replace, value)


def load_compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # `<<: *anchor` merges are resolved here
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services: mapping"
    return data


def dockerfile_instructions(text: str, *, final_stage: bool = True) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of the Dockerfile (its final build stage), continuations joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank lines and comments, also inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1]
            continue
        keyword, _, rest = (current + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    if not final_stage:
        return instructions
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1]:]


def parse_form(arguments: str) -> tuple[list[str], bool]:
    """(argv, is_shell_form) of a CMD/ENTRYPOINT/HEALTHCHECK CMD argument string."""
    if arguments.startswith("["):
        try:
            argv = json.loads(arguments)
        except json.JSONDecodeError:
            pass
        else:
            assert all(isinstance(a, str) for a in argv), arguments
            return argv, False
    return ["/bin/sh", "-c", arguments], True


def as_argv(value: object) -> list[str]:
    """A compose `command`/`entrypoint` (list, or a string compose splits like a shell)."""
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), f"unexpected command {value!r}"
    return [str(interpolate(v)) for v in value]


class Image:
    """What the tests need from the Dockerfile's final stage."""

    def __init__(self, text: str) -> None:
        self.instructions = dockerfile_instructions(text)
        self.entrypoint: tuple[list[str], bool] | None = None
        self.cmd: tuple[list[str], bool] | None = None
        self.healthcheck: str | None = None
        self.exposed: set[int] = set()
        self.volumes: set[str] = set()
        self.args: set[str] = set()
        for keyword, rest in self.instructions:
            if keyword == "ENTRYPOINT":
                self.entrypoint = parse_form(rest)
                self.cmd = None  # a new ENTRYPOINT resets an inherited CMD
            elif keyword == "CMD":
                self.cmd = parse_form(rest)
            elif keyword == "HEALTHCHECK":
                self.healthcheck = rest
            elif keyword == "EXPOSE":
                self.exposed |= {int(p.split("/")[0]) for p in rest.split()}
            elif keyword == "VOLUME":
                vols = json.loads(rest) if rest.startswith("[") else rest.split()
                self.volumes |= set(vols)
        self.env: dict[str, str] = {}
        for keyword, rest in self.instructions:
            if keyword == "ENV":
                if "=" not in rest.split(None, 1)[0]:  # legacy `ENV KEY value`
                    key, _, value = rest.partition(" ")
                    self.env[key] = value.strip()
                else:
                    self.env.update(item.split("=", 1) for item in shlex.split(rest))
        for keyword, rest in dockerfile_instructions(text, final_stage=False):
            if keyword == "ARG":  # ARGs before FROM and in any stage may be set by compose
                self.args.add(rest.split("=")[0].strip())

    def argv(self, entrypoint: object = None, command: object = None) -> list[str]:
        """The process a container runs, given compose's `entrypoint`/`command` overrides."""
        if entrypoint is not None:
            ep, ep_shell, cmd = as_argv(entrypoint), False, None  # also resets the image's CMD
        elif self.entrypoint is not None:
            (ep, ep_shell), cmd = self.entrypoint, self.cmd
        else:
            ep, ep_shell, cmd = [], False, self.cmd
        if command is not None:
            cmd = (as_argv(command), False)
        if ep_shell:
            argv = ep  # a shell-form ENTRYPOINT ignores CMD and command
        else:
            argv = ep + (cmd[0] if cmd else [])
        if len(argv) == 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
            argv = shlex.split(argv[2])
            if argv[:1] == ["exec"]:
                argv = argv[1:]
        return argv


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(interpolate(v)) for k, v in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def option_value(argv: list[str], option: str) -> str | None:
    for i, token in enumerate(argv):
        if token == option and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return None


def volume_mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes (short and long syntax)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            parts = str(interpolate(volume)).split(":")
            if len(parts) == 1:
                mounts[parts[0]] = ""
            else:
                mounts[parts[1]] = parts[0]
    return mounts


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def image() -> Image:
    return Image(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text())["project"].get("scripts", {})


def container_commands(services: dict[str, dict], image: Image) -> list[tuple[str, list[str]]]:
    commands = [("Dockerfile CMD", image.argv())]
    for name in APP_SERVICES:
        spec = services[name]
        commands.append(
            (f"service {name}", image.argv(spec.get("entrypoint"), spec.get("command")))
        )
    return commands


def resolve_cli(target: str):
    """The click command behind a console-script target such as `service.cli:app`.

    Duck-typed: recent typer releases carry their own copy of click (typer._click), whose
    classes are not the `click` package's.
    """
    import typer
    import typer.main

    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    if isinstance(obj, typer.Typer):
        return typer.main.get_command(obj)
    if hasattr(obj, "make_context") and hasattr(obj, "params"):
        return obj
    pytest.fail(f"{target} is neither a typer app nor a click command: cannot check its commands")


# --- the stack -------------------------------------------------------------------------------


def test_the_five_services_exist(services):
    missing = set(ALL_SERVICES) - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_app_services_are_built_from_this_dockerfile(services, image):
    tags = set()
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build is not None, f"{name}: no build: section (api/worker/beat share ./Dockerfile)"
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE_FILE.parent / interpolate(build.get("context", "."))).resolve()
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        dockerfile = (context / interpolate(build.get("dockerfile", "Dockerfile"))).resolve()
        assert dockerfile == DOCKERFILE.resolve(), f"{name}: builds {dockerfile}, not ./Dockerfile"
        unknown_args = set(build.get("args") or {}) - image.args
        assert not unknown_args, f"{name}: build args {sorted(unknown_args)} are no ARG of the Dockerfile"
        tags.add(services[name].get("image"))
    assert len(tags) == 1, f"api/worker/beat should tag one image, found {sorted(map(str, tags))}"


def test_backing_services_use_pinned_images_with_healthchecks(services):
    assert str(services["postgres"].get("image", "")).startswith("postgres:16")
    assert str(services["redis"].get("image", "")).startswith("redis:7")
    for name in ("postgres", "redis"):
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: needs a healthcheck"


def test_depends_on_refers_to_services_that_exist(services, image):
    valid_conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, spec in services.items():
        for dep, condition in depends_on(spec).items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name, f"{name} depends on itself"
            assert condition in valid_conditions, f"{name} -> {dep}: unknown condition {condition!r}"
            if condition == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                from_image = dep in APP_SERVICES and image.healthcheck not in (None, "NONE")
                healthy = (check.get("test") or from_image) and not check.get("disable")
                assert healthy, f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
    # no cycles
    graph = {name: set(depends_on(spec)) for name, spec in services.items()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        if node not in done:
            for dep in graph.get(node, ()):
                visit(dep, (*path, node))
            done.add(node)

    for name in graph:
        visit(name, ())


def test_app_services_wait_for_healthy_postgres_and_redis(services):
    for name in APP_SERVICES:
        deps = depends_on(services[name])
        for backing in ("postgres", "redis"):
            assert deps.get(backing) == "service_healthy", (
                f"{name} must depend on {backing} with condition service_healthy"
            )


def test_app_services_share_no_disk(compose, services, image):
    """Checkpoints and meta-training sets live in Postgres (database blobs): no app service mounts a
    volume or host folder that another one mounts, so api and worker may run on different hosts."""
    from service.settings import Settings

    mounted: dict[str, str] = {}
    for name in APP_SERVICES:
        for target, source in volume_mounts(services[name]).items():
            assert source not in mounted, f"{name} and {mounted[source]} share {source!r} ({target})"
            mounted[source] = name
        env = environment(services[name])
        assert env.get("BRAIN_DATA_DIR") == DATA_DIR, f"{name}: BRAIN_DATA_DIR must be {DATA_DIR}"
        settings = Settings(**{k[len(ENV_PREFIX):].lower(): v for k, v in env.items()
                               if k.startswith(ENV_PREFIX) and k != "BRAIN_ADMIN_KEY"})
        assert settings.blob_backend == "database", f"{name}: blobs must live in the database, not under /data"
    assert "brain-data" not in (compose.get("volumes") or {}), "the shared checkpoint volume is gone"
    assert DATA_DIR in image.volumes, f"the Dockerfile should declare VOLUME {DATA_DIR} (the embedded image's state)"
    api = image.argv(services["api"].get("entrypoint"), services["api"].get("command"))
    assert option_value(api, "--data-dir") in (None, DATA_DIR), "api: --data-dir must be /data"


def test_app_services_are_configured_for_the_full_stack(services):
    postgres_env = environment(services["postgres"])
    for name in APP_SERVICES:
        env = environment(services[name])
        for key in ("BRAIN_DATABASE_URL", "BRAIN_REDIS_URL", "BRAIN_DATA_DIR"):
            assert env.get(key), f"{name}: {key} is not set"
        db = urlsplit(env["BRAIN_DATABASE_URL"])
        assert db.scheme == "postgresql+psycopg", f"{name}: BRAIN_DATABASE_URL scheme {db.scheme}"
        assert db.hostname == "postgres", f"{name}: BRAIN_DATABASE_URL must point at the postgres service"
        assert db.username == postgres_env.get("POSTGRES_USER", "postgres")
        assert db.password == postgres_env.get("POSTGRES_PASSWORD")
        assert db.path.lstrip("/") == postgres_env.get("POSTGRES_DB", db.username)
        redis = urlsplit(env["BRAIN_REDIS_URL"])
        assert redis.scheme == "redis" and redis.hostname == "redis", (
            f"{name}: BRAIN_REDIS_URL must point at the redis service"
        )


def test_worker_reserves_gpus(services):
    devices = (
        ((services["worker"].get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    ).get("devices") or []
    gpus = [
        d
        for d in devices
        if d.get("driver") == "nvidia"
        and (d.get("count") == "all" or (isinstance(d.get("count"), int) and d["count"] > 0))
        and "gpu" in (d.get("capabilities") or [])
    ]
    assert gpus, "worker: no deploy.resources.reservations.devices entry (driver nvidia, count all, capabilities [gpu])"


def test_dockerfile_exposes_the_api_port_and_checks_healthz(services, image):
    api = services["api"]
    argv = image.argv(api.get("entrypoint"), api.get("command"))
    port = int(option_value(argv, "--port") or 8000)
    assert port in image.exposed, f"api listens on {port}, the Dockerfile EXPOSEs {sorted(image.exposed)}"
    targets = set()
    for mapping in api.get("ports") or []:
        if isinstance(mapping, dict):
            targets.add(int(mapping["target"]))
        else:
            targets.add(int(str(interpolate(mapping)).split("/")[0].rsplit(":", 1)[-1]))
    assert targets == {port}, f"api publishes container ports {sorted(targets)}, it listens on {port}"
    assert image.healthcheck and "/healthz" in image.healthcheck, "HEALTHCHECK must probe /healthz"
    assert f":{port}/" in image.healthcheck, f"HEALTHCHECK must probe port {port}"


SCALED = ("api", "worker")  # docker compose up --scale worker=4 --scale api=2 (issue 17)


def published_host_ports(mapping: object) -> range | None:
    """The host ports a `ports:` entry publishes (None: Docker picks an ephemeral one per container)."""
    if isinstance(mapping, dict):
        published = mapping.get("published")
        host = None if published in (None, "") else str(interpolate(published))
    else:
        parts = str(interpolate(mapping)).split("/")[0].split(":")  # [ip:][host:]container
        host = parts[-2] if len(parts) >= 2 else None
    if not host:
        return None
    low, _, high = host.partition("-")
    return range(int(low), int(high or low) + 1)


@pytest.mark.parametrize("name", SCALED)
def test_scaled_services_can_run_several_containers(services, name):
    """Several containers of a scaled service: no fixed container name, and no single host port
    (the second container would find it taken): a range of ports, or none published."""
    service = services[name]
    assert "container_name" not in service, f"{name}: a container_name allows one container only"
    for mapping in service.get("ports") or []:
        ports = published_host_ports(mapping)
        assert ports is None or len(ports) >= 2, (
            f"{name} publishes the single host port {ports.start}: `--scale {name}=2` clashes on it; "
            "publish a range (\"8000-8009:8000\") or let Docker pick")


def test_published_host_port_ranges_do_not_overlap(services):
    taken: dict[int, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports") or []:
            for port in published_host_ports(mapping) or ():
                assert port not in taken, f"{name} and {taken[port]} both publish host port {port}"
                taken[port] = name


def test_published_host_ports_parse() -> None:
    assert published_host_ports("8000") is None
    assert published_host_ports("8000:8000") == range(8000, 8001)
    assert published_host_ports("127.0.0.1:8000-8003:8000/tcp") == range(8000, 8004)
    assert published_host_ports({"target": 8000, "published": "8000-8001"}) == range(8000, 8002)
    assert published_host_ports({"target": 8000}) is None


def test_image_runs_as_non_root_and_uses_python_3_11(image):
    from_ = next(rest for keyword, rest in image.instructions if keyword == "FROM")
    assert from_.split()[0].startswith("python:3.11"), from_
    users = [rest for keyword, rest in image.instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"


# --- against the code ------------------------------------------------------------------------


def test_every_container_command_is_a_real_brain_command(services, image, scripts):
    assert "brain" in scripts, "pyproject.toml [project.scripts] declares no `brain`"
    for label, argv in container_commands(services, image):
        assert argv, f"{label}: runs nothing"
        executable = Path(argv[0]).name
        assert executable in scripts, (
            f"{label}: runs {argv[0]!r}, not a console script of the image {sorted(scripts)}"
        )
        group = resolve_cli(scripts[executable])
        assert isinstance(getattr(group, "commands", None), dict), (
            f"{scripts[executable]} has no subcommands (a typer app with one command collapses "
            "into that command)"
        )
        assert len(argv) >= 2, f"{label}: `{executable}` needs a subcommand"
        subcommand, args = argv[1], argv[2:]
        assert subcommand in group.commands, (
            f"{label}: `{executable} {subcommand}` is not a command; it has {sorted(group.commands)}"
        )
        command = group.commands[subcommand]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for token in args:
            if token == "--":
                break
            if token.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", token):
                name = token.split("=", 1)[0]
                assert name in known, (
                    f"{label}: `{executable} {subcommand}` has no option {name}; it has {sorted(known)}"
                )
        parent = group.context_class(group, info_name=executable)
        error = None
        try:  # parses and converts the arguments (types, required options), runs nothing
            command.make_context(subcommand, list(args), parent=parent)
        except Exception as exc:  # click's UsageError/BadParameter, typer's own copy of them
            error = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        if error is not None:
            pytest.fail(f"{label}: `{shlex.join(argv)}` does not parse: {error}")


def _settings_env_names(settings_cls) -> tuple[dict[str, str], bool]:
    """Environment variable name -> field, as pydantic-settings reads them."""
    from pydantic import AliasChoices

    config = settings_cls.model_config
    prefix = config.get("env_prefix", "")
    case_sensitive = bool(config.get("case_sensitive", False))
    names: dict[str, str] = {}
    for field_name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            candidates = [alias]
        elif isinstance(alias, AliasChoices):
            candidates = [c for c in alias.choices if isinstance(c, str)]
        else:
            candidates = [prefix + field_name]
        for candidate in candidates:
            names[candidate if case_sensitive else candidate.upper()] = field_name
    return names, case_sensitive


def test_every_brain_variable_is_a_settings_field(services, image):
    from service.settings import Settings

    assert Settings.model_config.get("env_prefix") == ENV_PREFIX
    names, case_sensitive = _settings_env_names(Settings)
    sources = {f"service {name}": environment(spec) for name, spec in services.items()}
    sources["Dockerfile ENV"] = image.env
    for name, env in sources.items():
        for key in env:
            if not key.upper().startswith(ENV_PREFIX):
                continue
            lookup = key if case_sensitive else key.upper()
            assert lookup in names, (
                f"{name}: {key} is no field of service.settings.Settings "
                f"(known: {', '.join(sorted(names))})"
            )


def _settings_from_compose(service: dict, monkeypatch, tmp_path):
    """service.settings.Settings as a container of this compose service would build it."""
    import os

    from service.settings import Settings

    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    names, case_sensitive = _settings_env_names(Settings)
    env = {
        key: value
        for key, value in environment(service).items()
        if (key if case_sensitive else key.upper()) in names  # unknown ones: the test above
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    settings = Settings()  # a ValidationError here: compose sets a value Settings rejects
    for key in env:
        field = names[key if case_sensitive else key.upper()]
        assert getattr(settings, field) is not None, f"{key} did not reach Settings.{field}"
    return settings


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_environment_gives_valid_settings(services, service, monkeypatch, tmp_path):
    settings = _settings_from_compose(services[service], monkeypatch, tmp_path)
    assert str(settings.data_dir) == DATA_DIR


def test_workers_consume_every_celery_queue(services, image, scripts, monkeypatch, tmp_path):
    """Every queue the Celery app declares or routes to is consumed by some `brain worker`."""
    from workers.celery_app import create_celery

    settings = _settings_from_compose(services["worker"], monkeypatch, tmp_path)
    conf = create_celery(settings).conf
    needed = {q.name for q in conf.task_queues or ()} | {conf.task_default_queue}
    routes = conf.task_routes or {}
    if isinstance(routes, dict):
        needed |= {route["queue"] for route in routes.values() if isinstance(route, dict) and "queue" in route}
    worker_cli = resolve_cli(scripts["brain"]).commands["worker"]
    default = next((p.default for p in worker_cli.params if "--queues" in p.opts), None)
    consumed: set[str] = set()
    for name, spec in services.items():
        if name not in APP_SERVICES:
            continue
        argv = image.argv(spec.get("entrypoint"), spec.get("command"))
        if argv[1:2] == ["worker"]:
            queues = option_value(argv, "--queues") or default or ""
            consumed |= {q.strip() for q in str(queues).split(",") if q.strip()}
    missing = needed - consumed
    assert not missing, f"no compose worker consumes the Celery queues {sorted(missing)} (it consumes {sorted(consumed)})"


def test_the_api_requires_an_admin_key_and_only_the_api_gets_it(services, monkeypatch, tmp_path):
    """The full stack never serves an open API: BRAIN_REQUIRE_AUTH is on and BRAIN_ADMIN_KEY must
    come from the operator's environment (`${BRAIN_ADMIN_KEY:?...}`: no default, no secret in the
    file); the worker and beat serve no HTTP and do not get it."""
    from service.app import create_app
    from service.auth import AuthConfigError

    raw = services["api"].get("environment") or {}
    assert isinstance(raw, dict), "api: environment should be a mapping"
    assert str(raw.get("BRAIN_REQUIRE_AUTH")).lower() == "true", "api: BRAIN_REQUIRE_AUTH must be true"
    assert re.fullmatch(r"\$\{BRAIN_ADMIN_KEY:\?[^}]+\}", str(raw.get("BRAIN_ADMIN_KEY"))), (
        f"api: BRAIN_ADMIN_KEY must be ${{BRAIN_ADMIN_KEY:?message}}, not {raw.get('BRAIN_ADMIN_KEY')!r}"
    )
    for name in ("worker", "beat"):
        assert "BRAIN_ADMIN_KEY" not in environment(services[name]), f"{name} needs no admin key"
    settings = _settings_from_compose(services["api"], monkeypatch, tmp_path)
    assert settings.require_auth
    assert settings.admin_key.get_secret_value() == REQUIRED_ENV["BRAIN_ADMIN_KEY"]
    create_app(settings)  # starts: the key is there
    monkeypatch.delenv("BRAIN_ADMIN_KEY")
    with pytest.raises(AuthConfigError, match="BRAIN_ADMIN_KEY"):
        create_app(type(settings)())
