"""TLS certificates and SuperNode key pairs for a federation, made with ``cryptography``.

Usage (a real deployment: run on the SuperLink's host, copy ``ca.crt`` and one key to each
device, keep ``server.key`` and the CA's key nowhere else)::

    python -m fedticket.simulations.edge.certs --out certs --hosts server.local,10.0.0.2 --nodes 3

A run gets its own CA, a SuperLink certificate for the addresses it serves (``localhost`` and
``127.0.0.1`` on loopback; a real deployment adds the server's host name or IP) and one EC key
pair per SuperNode in OpenSSH format, which is what Flower 1.39's SuperNode authentication
takes (``flwr supernode register node.pub``, ``--auth-supernode-private-key node``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ServerCertificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only from its first byte: created 0600 (writing, then chmod-ing left the key
    world-readable for a moment), and narrowed before writing if it existed wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_server_certificates(
    directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 30
) -> ServerCertificates:
    """A fresh CA and a SuperLink certificate it signs, valid for ``hosts`` (names or IPs)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedticket run CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = ServerCertificates(
        directory / "ca.crt", directory / "server.pem", directory / "server.key"
    )
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.server_key, _key_pem(server_key))
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC (SECP384R1) key pair in OpenSSH format: (private key, public key ``.pub``)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Make a CA, a SuperLink certificate and node keys."
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--hosts", default="localhost,127.0.0.1", help="names and IPs the SuperLink is reached at"
    )
    parser.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs to make")
    args = parser.parse_args(argv)
    paths = make_server_certificates(args.out, tuple(h for h in args.hosts.split(",") if h))
    print(f"CA {paths.ca_cert}, SuperLink {paths.server_cert} + {paths.server_key}")
    for k in range(args.nodes):
        private, public = make_node_key(args.out / "keys", f"node{k}")
        print(f"node{k}: private {private} (to the device), public {public} (register it)")


if __name__ == "__main__":
    main()
