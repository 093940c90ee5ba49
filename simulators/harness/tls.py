"""Certificates made at test time with the ``openssl`` CLI: a CA, server and client certificates.

EC P-256 keys, valid for two days; everything lands in one directory. Nothing here is for
production (the CA key sits next to the certificates).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


def _key_and_request(directory: Path, name: str, subject: str) -> tuple[Path, Path]:
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", request, "-subj", f"/CN={subject}")  # fmt: skip
    return key, request


def make_ca(directory: Path, name: str = "ca", subject: str = "sensord test CA") -> CertFiles:
    """A self-signed CA."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={subject}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return CertFiles(cert, key)


def issue(
    ca: CertFiles,
    directory: Path,
    name: str,
    *,
    common_name: str | None = None,
    hosts: tuple[str, ...] = (),
    client: bool = False,
) -> CertFiles:
    """A certificate signed by ``ca``: a server one for ``hosts`` (DNS names or IPs, as
    subjectAltName), else (``client``) one whose CN is the client's identity."""
    directory.mkdir(parents=True, exist_ok=True)
    key, request = _key_and_request(directory, name, common_name or name)
    cert, extensions = directory / f"{name}.crt", directory / f"{name}.ext"
    alt = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}"
                   for h in hosts)  # fmt: skip
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
    ]
    if alt:
        lines.append(f"subjectAltName={alt}")
    extensions.write_text("\n".join(lines) + "\n")
    _openssl("x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", extensions)  # fmt: skip
    return CertFiles(cert, key)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and nothing else yet."""

    directory: Path
    ca: CertFiles
    server: CertFiles

    @classmethod
    def make(cls, directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
        ca = make_ca(directory)
        return cls(directory, ca, issue(ca, directory, "server", hosts=hosts))

    def client(self, identity: str) -> CertFiles:
        """A client certificate with CN ``identity`` (the user name under
        ``use_identity_as_username``)."""
        return issue(self.ca, self.directory, f"client-{identity}", common_name=identity,
                     client=True)  # fmt: skip
