"""`shoal auth`: a nats-server config with per-role users and permissions, creds and TLS; and
adding one user or node to it later without regenerating the others."""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from cli import auth_roles as roles
from cli.auth_files import (
    SECRETS_KEY,
    creds_text,
    k8s_secrets,
    routes_tls_conf,
    server_conf,
)
from cli.auth_roles import (
    BUCKETS,
    Identity,
    Permissions,
    admin_permissions,
    compute_permissions,
    orchestrator_permissions,
    user_permissions,
    users_conf,
)
from cli.tls import default_hosts, tls_material
from shared import subjects

__all__ = [
    "BUCKETS",
    "Identity",
    "Permissions",
    "admin_permissions",
    "auth",
    "compute_permissions",
    "generate",
    "orchestrator_permissions",
    "user_permissions",
    "users_conf",
]


def identities(
    nodes: Sequence[str],
    orchestrators: int,
    users: Sequence[str],
    admins: Sequence[str] = (),
) -> list[Identity]:
    """Orchestrators orchestrator-1..N, one identity per node, user (`name[:ns[+ns]]`), admin."""
    out = [roles.orchestrator(f"orchestrator-{i}") for i in range(1, orchestrators + 1)]
    out += [roles.compute(name) for name in nodes]
    for spec in users:
        name, namespaces = roles.parse_user(spec)
        out.append(roles.user(name, namespaces))
    out += [roles.admin(name) for name in admins]
    return out


def _write(path: Path, text: str | bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _split(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _names(value: str, what: str) -> list[str]:
    names = _split(value)
    for n in names:
        try:
            subjects.check_token(n, what)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return names


def _user_specs(value: str) -> list[str]:
    specs = _split(value)
    for spec in specs:
        try:
            roles.parse_user(spec)
        except ValueError as exc:
            raise click.BadParameter(f"{exc} (in {spec!r})") from None
    return specs


# A node name becomes a file name (`<name>.creds`) and a Secret key: DNS-name characters.
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def check_node_names(names: Sequence[str]) -> None:
    """Host or Kubernetes node names (`ip-10-0-0-1.ec2.internal` is fine); two names that
    map to the same node id would share its subjects, so they are refused."""
    by_id: dict[str, str] = {}
    for n in names:
        if not _NODE_NAME.match(n):
            raise click.BadParameter(
                f"node name {n!r} must be 1-253 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        node_id = subjects.node_id_from(n)
        if node_id in by_id and by_id[node_id] != n:
            raise click.BadParameter(
                f"node names {by_id[node_id]!r} and {n!r} both become node id {node_id!r}; "
                "rename one"
            )
        by_id[node_id] = n


def _check_distinct(names: Sequence[str]) -> None:
    try:
        roles.check_distinct(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _route_hosts(hosts: Sequence[str], namespace: str) -> list[str]:
    # The Helm chart's routes name members `nats-0.nats-headless` (no namespace).
    return [*(hosts or default_hosts(namespace)), "*.nats-headless"]


def generate(
    out: Path,
    *,
    nodes: Sequence[str],
    orchestrators: int = 1,
    users: Sequence[str] = (),
    admins: Sequence[str] = (),
    tls: bool = False,
    hosts: Sequence[str] = (),
    port: int = 4222,
    namespace: str = "shoal",
) -> list[Identity]:
    """Write everything `shoal auth init` writes into `out`; returns the identities.

    `users` are `name`, `name:namespace` or `name:ns1+ns2` (no namespace: `default`)."""
    out = out.resolve()
    check_node_names(nodes)
    ids = identities(nodes, orchestrators, users, admins)
    _check_distinct([i.name for i in ids])
    _write(out / "users.conf", users_conf(ids), secret=True)
    _write(out / "nats-server.conf", server_conf(out, port, tls), secret=False)
    if tls:
        material = tls_material(list(hosts) or default_hosts(namespace))
        for name, pem in material.items():
            _write(out / "tls" / name, pem, secret=name.endswith("key.pem"))
    routes = tls_material(_route_hosts(hosts, namespace))
    for name, pem in zip(
        ("route-ca.pem", "route-ca-key.pem", "route.pem", "route-key.pem"),
        (routes["ca.pem"], routes["ca-key.pem"], routes["server.pem"], routes["server-key.pem"]),
        strict=True,
    ):
        _write(out / "tls" / "routes" / name, pem, secret=name.endswith("key.pem"))
    _write(out / "routes-tls.conf", routes_tls_conf(str(out / "tls" / "routes")), secret=False)
    for ident in ids:
        _write_creds(out, ident)
    if not (out / SECRETS_KEY).exists():  # kept by --force: it decrypts the stored secrets
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        _write(out / SECRETS_KEY, key + "\n", secret=True)
    _write(out / "k8s-secrets.yaml", k8s_secrets(out, namespace), secret=True)
    return ids


def _write_creds(out: Path, ident: Identity) -> Path:
    ca = str(Path("..") / "tls" / "ca.pem") if (out / "tls" / "ca.pem").exists() else None
    path = out / "creds" / f"{ident.name}.creds"
    _write(path, creds_text(ident, ca), secret=True)
    return path


def add(out: Path, ident: Identity, *, replace: bool = False) -> Path:
    """Add one identity to the users.conf in `out` (the others keep their passwords), write its
    creds and refresh k8s-secrets.yaml; returns the creds file. nats-server reads the new
    users.conf on `nats-server --signal reload` (or SIGHUP)."""
    out = out.resolve()
    conf_path = out / "users.conf"
    try:
        conf = conf_path.read_text()
    except OSError as exc:
        raise click.UsageError(
            f"cannot read {conf_path} ({exc.strerror or exc}): run `shoal auth init` first"
        ) from None
    others = [k.name for k in roles.known(conf) if k.name != ident.name]
    _check_distinct([*others, ident.name])
    try:
        conf = roles.add_block(conf, ident, replace=replace)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _write(conf_path, conf, secret=True)
    creds = _write_creds(out, ident)
    _write(out / "k8s-secrets.yaml", k8s_secrets(out, _k8s_namespace(out)), secret=True)
    return creds


def _k8s_namespace(out: Path) -> str:
    try:
        docs = list(yaml.safe_load_all((out / "k8s-secrets.yaml").read_text()))
        return str(docs[0]["metadata"]["namespace"])
    except (OSError, yaml.YAMLError, LookupError, TypeError):
        return "shoal"


@click.group()
def auth() -> None:
    """Credentials and permissions for a secured NATS deployment."""


_OUT = click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory `shoal auth init` writes (created if needed).",
)


@auth.command("init")
@_OUT
@click.option(
    "--nodes",
    default="",
    help="Compute node names as given to `shoal compute --name` (Kubernetes node names), "
    "comma-separated; one user and one NAME.creds each.",
)
@click.option("--orchestrators", type=click.IntRange(0), default=1, show_default=True)
@click.option(
    "--users",
    default="",
    help="CLI users, comma-separated, each NAME or NAME:NAMESPACE[+NAMESPACE...] "
    "(alice:team-a,carol:team-a+team-b); no namespace means `default`.",
)
@click.option("--admins", default="", help="Admins (every namespace, node verbs), comma-separated.")
@click.option("--tls", is_flag=True, help="Also make a CA and a server certificate for clients.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Server certificate name or IP (repeatable), for clients and cluster routes; "
    "default: localhost and the k8s names.",
)
@click.option("--port", type=int, default=4222, show_default=True, help="Client port.")
@click.option("--namespace", default="shoal", show_default=True, help="For k8s-secrets.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an existing users.conf.")
def init(
    out: Path,
    nodes: str,
    orchestrators: int,
    users: str,
    admins: str,
    tls: bool,
    hosts: tuple[str, ...],
    port: int,
    namespace: str,
    force: bool,
) -> None:
    """Generate nats-server.conf, users.conf, one creds file per identity, route TLS (and
    client TLS)."""
    if (out / "users.conf").exists() and not force:
        raise click.UsageError(f"{out / 'users.conf'} exists; pass --force to replace it")
    ids = generate(
        out,
        nodes=_split(nodes),
        orchestrators=orchestrators,
        users=_user_specs(users),
        admins=_names(admins, "admin name"),
        tls=tls,
        hosts=hosts,
        port=port,
        namespace=namespace,
    )
    click.echo(
        f"wrote {out / 'nats-server.conf'} "
        f"(start: nats-server -c {out / 'nats-server.conf'} -sd {out / 'data'})"
    )
    click.echo(f"wrote {out / 'users.conf'}, {out / 'routes-tls.conf'} and k8s-secrets.yaml")
    for ident in ids:
        click.echo(_line(out, ident))
    if tls:
        click.echo(f"wrote a CA and server certificate in {out / 'tls'}")


def _line(out: Path, ident: Identity) -> str:
    line = f"  {ident.role:<12} --creds {out / 'creds' / (ident.name + '.creds')}"
    if ident.node_id and ident.node_id != ident.name:
        line += f"  (node id {ident.node_id})"
    if ident.namespaces:
        line += f"  (namespaces {', '.join(ident.namespaces)})"
    return line


_RELOAD = "then reload the server: nats-server --signal reload (or kill -HUP its pid)"


@auth.command("add-user")
@_OUT
@click.argument("name")
@click.option(
    "--namespaces",
    default="",
    help="Comma-separated namespaces the user may use (first: the CLI's default); none: `default`.",
)
@click.option("--admin", "is_admin", is_flag=True, help="An admin: every namespace, node verbs.")
@click.option("--force", is_flag=True, help="Replace the user if it exists (a new password).")
def add_user(out: Path, name: str, namespaces: str, is_admin: bool, force: bool) -> None:
    """Add a user (or admin) to an existing users.conf and write its creds only."""
    spaces = _names(namespaces, "namespace") or [roles.DEFAULT_NAMESPACE]
    try:
        subjects.check_token(name, "user name")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if is_admin and namespaces:
        raise click.UsageError("an admin has every namespace: drop --namespaces")
    ident = roles.admin(name) if is_admin else roles.user(name, spaces)
    add(out, ident, replace=force)
    click.echo(_line(out.resolve(), ident))
    click.echo(f"added {name} to {out / 'users.conf'} and k8s-secrets.yaml; {_RELOAD}")


@auth.command("add-node")
@_OUT
@click.argument("name")
@click.option("--force", is_flag=True, help="Replace the node if it exists (a new password).")
def add_node(out: Path, name: str, force: bool) -> None:
    """Add a compute node to an existing users.conf and write its creds only."""
    check_node_names([name])
    ident = roles.compute(name)
    add(out, ident, replace=force)
    click.echo(_line(out.resolve(), ident))
    click.echo(f"added {name} to {out / 'users.conf'} and k8s-secrets.yaml; {_RELOAD}")
