"""The certificate haproxy serves: the admin's, or a self-signed one of ours.

haproxy reads one PEM file holding the certificate, its chain and the
private key. ``[haproxy] certificate`` names the admin's (e.g. from Let's
Encrypt); without one, salvusctl makes a self-signed certificate once, in
``secrets/tls.pem`` (root only: haproxy reads it before it drops to the
service user), for the names browsers will use. Its SHA-256 fingerprint is
what a person compares with the one the browser shows before trusting it.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from salvusctl.errors import ConfigError

DAYS = 825  # the longest validity browsers accept for a server certificate


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise ConfigError("openssl is not installed; install it (apt-get install openssl) "
                          "or name a certificate in [haproxy] certificate")
    return found


def _alt_names(names: list[str]) -> str:
    entries = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            ipaddress.ip_address(name)
            entries.append(f"IP:{name}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def make_self_signed(path: Path, name: str, also: tuple[str, ...] = (),
                     key_path: Path | None = None) -> None:
    """A self-signed ECDSA P-256 certificate and key for ``name`` and ``also``
    (plus localhost and loopback), written to ``path`` (mode 0600) at once;
    the key to ``key_path`` instead when one is given (PostgreSQL's way)."""
    names = [name, *also, socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    with tempfile.TemporaryDirectory() as scratch:
        key, cert = Path(scratch) / "key.pem", Path(scratch) / "cert.pem"
        result = subprocess.run(
            [_openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", str(DAYS),
             "-subj", f"/CN={name[:64]}", "-addext", f"subjectAltName={_alt_names(names)}",
             "-keyout", str(key), "-out", str(cert)],
            capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise ConfigError(f"openssl could not make a certificate: "
                              f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
        if key_path is None:
            _write_private(path, cert.read_text() + key.read_text())
        else:
            _write_private(key_path, key.read_text())
            _write_private(path, cert.read_text())


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, mode 0600, replacing it at once."""
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temporary.replace(path)


def fingerprint(path: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in ``path``, as
    browsers show it (AB:CD:...)."""
    result = subprocess.run([_openssl(), "x509", "-noout", "-fingerprint", "-sha256",
                             "-in", str(path)], capture_output=True, text=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        raise ConfigError(f"{path} holds no readable certificate; fix [haproxy] certificate "
                          "or remove the file to get a new self-signed one")
    return result.stdout.strip().split("=", 1)[1]


def check_pem(path: Path) -> None:
    """The admin's file: a certificate and a private key that belongs to it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"[haproxy] certificate {path} cannot be read ({exc.strerror}); "
                          "fix the path or its permissions") from None
    if "PRIVATE KEY-----" not in text or "CERTIFICATE-----" not in text:
        raise ConfigError(f"[haproxy] certificate {path} must hold the certificate and its "
                          "private key in one PEM file (cat fullchain.pem privkey.pem)")
    fingerprint(path)
