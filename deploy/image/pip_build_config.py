"""The build host's pip network settings, as a pip.conf for the image build's `pip.conf` secret.

    python3 deploy/image/pip_build_config.py OUT_DIR

Writes OUT_DIR/pip.conf (mode 0600) and prints the CA bundle the host's pip trusts, if one is
configured: `deploy/image/build.sh` passes both as build secrets (`pip.conf`, `pip-ca.pem`), which
the Dockerfile mounts for its pip steps only. So pip in the build reaches the index the way the
host's pip does (a private index or mirror, a proxy, a corporate CA) and none of it is stored in
the image.

Only what reaches an index over the network is carried: index-url, extra-index-url, trusted-host,
proxy, timeout and retries, and the CA bundle (`cert`, else REQUESTS_CA_BUNDLE/SSL_CERT_FILE as
pip's HTTP client honours them). Local indexes and wheel folders (file:// URLs, find-links),
constraint files and client certificates name files of the host that the build does not see: they
are left out. A proxy given only as HTTPS_PROXY/HTTP_PROXY in the environment becomes `proxy`.

Standard library only: it runs with the host's python3 before any venv exists.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# Where the Dockerfile mounts the CA bundle secret (`--mount=type=secret,id=pip-ca.pem,...`).
CA_TARGET = "/run/secrets/pip-ca.pem"

NETWORK_OPTIONS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries")
# pip's own environment spelling of an option is PIP_<NAME>; `timeout` is also `default-timeout`.
ALIASES = {"default-timeout": "timeout"}
SECTIONS = ("global", "install", "download", ":env:")


def parse_config_list(text: str) -> dict[str, str]:
    """`pip config list` output -> {option: value}, later sources winning (env over files).

    pip prints each source in precedence order (global, user, site, then the PIP_* environment as
    `:env:`), so the last occurrence of an option is the value pip uses.
    """
    options: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        section, _, name = key.rpartition(".")
        if section not in SECTIONS:
            continue
        try:
            value = ast.literal_eval(raw)
        except (SyntaxError, ValueError):
            value = raw.strip("'\"")
        options[ALIASES.get(name, name)] = str(value)
    return options


def _is_remote(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def build_config(options: Mapping[str, str], environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(pip.conf text for the build, the host CA bundle to mount or None)."""
    lines = ["# The build host's pip network settings (deploy/image/pip_build_config.py).", "[global]"]
    for name in NETWORK_OPTIONS:
        value = options.get(name, "")
        if name in ("index-url", "extra-index-url"):
            value = " ".join(url for url in value.split() if _is_remote(url))
        elif name == "proxy" and not value:
            value = next(
                (
                    environ[key]
                    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
                    if environ.get(key)
                ),
                "",
            )
        if value:
            lines.append(f"{name} = {value}")
    ca = options.get("cert") or environ.get("REQUESTS_CA_BUNDLE") or environ.get("SSL_CERT_FILE") or None
    if ca is not None and not Path(ca).is_file():
        ca = None
    if ca is not None:
        lines.append(f"cert = {CA_TARGET}")
    return "\n".join(lines) + "\n", ca


def host_pip_options(python: str) -> dict[str, str]:
    """The options the host's pip uses (its config files and PIP_* variables); {} without pip."""
    try:
        result = subprocess.run(
            [python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return {}
    return parse_config_list(result.stdout) if result.returncode == 0 else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--python", default=os.environ.get("PYTHON", "python3"), help="whose pip to ask")
    args = parser.parse_args(argv)
    text, ca = build_config(host_pip_options(args.python), os.environ)
    target = args.out_dir / "pip.conf"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if ca is not None:
        print(ca)
    return 0


if __name__ == "__main__":
    sys.exit(main())
