"""`realtime certs` and the server's TLS context: names covered, key permissions, a pair Python's TLS accepts, and
one-line reasons for a pair it cannot use."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from realtime.certs import local_ipv4_addresses, make_self_signed, subject_names
from realtime.cli import main
from realtime.config import Settings
from realtime.server.run import tls_context


def test_subject_names_keep_order_and_drop_repeats() -> None:
    names = subject_names(["Captions.LAN", "192.168.1.20", "localhost"], local=["192.168.1.20", "10.0.0.5"])
    assert names == ["captions.lan", "192.168.1.20", "localhost", "127.0.0.1", "10.0.0.5"]


def test_local_addresses_are_ipv4_and_not_loopback() -> None:
    for address in local_ipv4_addresses():
        ip = ipaddress.IPv4Address(address)
        assert not ip.is_loopback and not ip.is_unspecified


def test_self_signed_pair(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path / "tls", ["captions.lan", "192.168.1.20", "fd00::7"], days=30, local=[])
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["captions.lan", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.168.1.20", "fd00::7", "127.0.0.1"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30
    server = tls_context(str(pair.cert), str(pair.key))
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = ssl.create_default_context(cafile=str(pair.cert))  # a client that trusts the certificate
    for name in ("captions.lan", "192.168.1.20", "localhost", "127.0.0.1"):
        assert handshake(server, client, name) == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, client, "other.lan")
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed"):
        handshake(server, ssl.create_default_context(), "captions.lan")  # nobody vouches for it otherwise


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A TLS handshake in memory (no sockets); the version agreed, or the client's verification error."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    done = {"s": False, "c": False}
    for _ in range(10):
        for key, end in (("c", c), ("s", s)):
            if not done[key]:
                try:
                    end.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return c.version()
    raise AssertionError("no handshake")


def test_key_file_permissions_are_tightened_when_it_existed(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("old")
    (tmp_path / "key.pem").chmod(0o644)
    pair = make_self_signed(tmp_path, [], local=[])
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600 and b"PRIVATE KEY" in pair.key.read_bytes()


def test_certs_command_prints_the_serve_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out", str(tmp_path), "--host", "captions.lan", "10.1.2.3", "--days", "10"]) == 0
    out = capsys.readouterr().out
    assert (f"realtime serve --host 0.0.0.0 --tls-cert {tmp_path / 'cert.pem'} --tls-key {tmp_path / 'key.pem'}"
            in out)
    assert "https://captions.lan:8000/speak" in out and "accept the warning" in out


@pytest.mark.parametrize("case", ["missing cert", "missing key", "not pem", "other key"])
def test_unusable_pairs_give_one_line_reasons(tmp_path: Path, case: str) -> None:
    one = make_self_signed(tmp_path / "one", [], local=[])
    two = make_self_signed(tmp_path / "two", [], local=[])
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cert, key, reason = {
        "missing cert": (tmp_path / "nope.pem", one.key, "cannot read the TLS certificate"),
        "missing key": (one.cert, tmp_path / "nope.pem", "cannot read the TLS key"),
        "not pem": (tmp_path / "junk.pem", one.key, "not a PEM certificate"),
        "other key": (one.cert, two.key, "the key does not belong to the certificate"),
    }[case]
    with pytest.raises(ValueError, match=reason) as exc:
        tls_context(str(cert), str(key))
    assert "\n" not in str(exc.value)


def test_tls_settings_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="together"):
        Settings(tls_cert="/etc/realtime/cert.pem")
    with pytest.raises(ValueError, match="together"):
        Settings(tls_key="/etc/realtime/key.pem")
    assert Settings(tls_cert="c.pem", tls_key="k.pem").tls_key == "k.pem"
