"""`realtime certs`: a self-signed certificate and key for serving HTTPS and WSS on a LAN.

Browsers give a page the microphone only in a secure context (https://, or http://localhost on the machine itself),
so a lecturer's laptop or phone reaching the server at http://192.168.1.20:8000 gets no microphone. With this pair,
`realtime serve --tls-cert … --tls-key …` serves https:// and wss:// directly; each device accepts the self-signed
certificate once. For a public host name, use a real certificate (deploy/README.md: nginx or Caddy).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from realtime.config import state_dir

DEFAULT_DAYS = 365  # Apple platforms refuse TLS server certificates valid for more than 825 days
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"


def default_dir() -> Path:
    """$XDG_STATE_HOME/realtime/tls, else ~/.local/state/realtime/tls (beside the default database)."""
    return state_dir() / "tls"


def local_ipv4_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, found without sending anything: the source address the kernel
    picks for a UDP "connection" (connect on a datagram socket only chooses a route), and what the host name
    resolves to (/etc/hosts first)."""
    found: list[str] = []
    for target in ("10.255.255.255", "192.168.255.255", "172.31.255.255"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                found.append(s.getsockname()[0])
        except OSError:  # no route to that network
            continue
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM)
        found.extend(str(info[4][0]) for info in infos)
    except OSError:
        pass
    addresses = []
    for address in found:
        ip = ipaddress.IPv4Address(address)
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local) and address not in addresses:
            addresses.append(address)
    return addresses


def subject_names(hosts: list[str], local: list[str] | None = None) -> list[str]:
    """The names the certificate covers, in order and without repeats: the hosts given, localhost, 127.0.0.1 and
    the machine's own IPv4 addresses."""
    names: list[str] = []
    for name in [*hosts, "localhost", "127.0.0.1", *(local_ipv4_addresses() if local is None else local)]:
        name = name.strip().lower()
        if name and name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path
    names: list[str]
    not_after: datetime.datetime


def make_self_signed(out: Path, hosts: list[str], days: int = DEFAULT_DAYS,
                     local: list[str] | None = None) -> CertPair:
    """Write `cert.pem` and `key.pem` (EC P-256, mode 0600) to `out`, the certificate self-signed for
    `subject_names(hosts, local)`; existing files are replaced."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise ValueError("days must be at least 1")
    names = subject_names(hosts, local)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "realtime (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / KEY_FILE, out / CERT_FILE
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # also when the file existed with wider permissions
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, names, now + datetime.timedelta(days=days))


PHONE_NOTE = """\
On each phone, tablet or laptop, open the https:// address above once and accept the warning that the
certificate is not trusted (Chrome and Edge: Advanced, then Proceed; Firefox: Advanced, then Accept the Risk and
Continue; Safari on iPhone, iPad and Mac: Show Details, then visit this website). The browser then treats the page
as secure and may ask for the microphone. The warning is expected: nobody vouches for a self-signed certificate,
so check that you are on your own network, and accept it again when you make a new one. To avoid the warning,
install cert.pem as a trusted certificate on the device, or use a real host name with a real certificate
(deploy/README.md)."""


def certs_command(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve() if args.out else default_dir()
    try:
        pair = make_self_signed(out, args.host or [], args.days)
    except (OSError, ValueError) as exc:
        print(f"realtime: cannot write the certificate to {out}: {exc}", file=sys.stderr)
        return 2
    lan = [n for n in pair.names if n not in ("localhost", "127.0.0.1")]
    print(f"certificate: {pair.cert}")
    print(f"key:         {pair.key}   (mode 0600: keep it private)")
    print(f"valid for:   {', '.join(pair.names)}")
    print(f"expires:     {pair.not_after:%Y-%m-%d}")
    print()
    print("Serve HTTPS and WSS on every address of this machine:")
    print()
    print(f"  realtime serve --host 0.0.0.0 --tls-cert {shlex.quote(str(pair.cert))} "
          f"--tls-key {shlex.quote(str(pair.key))}")
    print()
    if lan:
        print("Then open, on other devices, the lecturer page and the viewer (port 8000 unless --port says otherwise):")
        for name in lan[:4]:
            print(f"  https://{_url_host(name)}:8000/speak?room=demo   https://{_url_host(name)}:8000/?room=demo")
    else:
        print("No LAN address was found: run again with --host and the name or address others reach you at.")
    print()
    print(PHONE_NOTE)
    return 0


def _url_host(name: str) -> str:
    try:
        return f"[{name}]" if ipaddress.ip_address(name).version == 6 else name
    except ValueError:
        return name
