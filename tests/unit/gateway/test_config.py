"""The gateway configuration file: what it accepts, and errors that say where and what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labctl.gateway.__main__ import main
from labctl.gateway.config import ConfigError, load_config, parse_config
from labctl.lab.pki import LabCa

KEY20 = "00112233445566778899aabbccddeeff01020304"


def manual(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "s2s", "local": "198.51.100.10", "remote": "198.51.100.20", "mode": "tunnel", "protection": "esp",
        "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"],
        "esp": {"spi_out": "0x1001", "spi_in": "0x2001", "encr": "aes128gcm16", "encr_key_out": KEY20,
                "encr_key_in": KEY20},
    }
    base.update(over)
    return base


def config(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "gw-a", "state_dir": "/tmp/x", "local": "198.51.100.10", "manual": [manual()]}
    base.update(over)
    return base


def test_minimal_manual_config() -> None:
    cfg = parse_config(config())
    t = cfg.manual[0]
    assert t.esp is not None and t.esp.spi_out == 0x1001 and t.esp.encr_key_in == bytes.fromhex(KEY20)
    assert cfg.tun.name == "ipsec0" and cfg.tun.mtu == 1400
    assert cfg.control_socket == Path("/tmp/x/control.sock")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"local": "198.51.100.300"}, "local: expected an IPv4 address, got '198.51.100.300'"),
        ({"manual": [manual(mode="tunel")]}, "manual[0].mode: expected one of 'tunnel', 'transport', got 'tunel'"),
        ({"manual": [manual(local_ts=["10.1.0.0/33"])]}, "manual[0].local_ts[0]: expected an IPv4 prefix"),
        ({"manual": [manual(esp={"spi_out": "0x10", "spi_in": "0x2001", "encr": "aes128gcm16"})]},
         "manual[0].esp.spi_out: SPI must be in 0x100..0xffffffff (RFC 4303 §2.1)"),
        ({"manual": [manual(protection="ah", ah={"spi_out": 4097, "spi_in": 8193})]},
         "manual[0].ah.integ: AH needs an integrity algorithm"),
        ({"manual": [manual(encap=True, protection="ah+esp",
                             ah={"spi_out": 4097, "spi_in": 8193, "integ": "sha256"})]},
         "UDP encapsulation carries ESP only"),
        ({"bogus": 1}, "top level: unknown field(s) bogus"),
        ({"manual": [manual(), manual()]}, "duplicate name(s) s2s"),
        ({"tun": {"mtu": 100}}, "tun.mtu: expected 576..65535, got 100"),
        ({"manual": [manual(esp={"spi_out": 4097, "spi_in": 8193, "encr": "aes128gcm16", "encr_key_out": "zz"})]},
         "manual[0].esp.encr_key_out: expected a hex string"),
    ],
)
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(**change))
    assert message in str(err.value)


def test_connection_errors() -> None:
    conn = {"name": "c", "version": 2, "ike_mode": "aggressive", "local": "198.51.100.10", "remote": "198.51.100.20",
            "auth": {"method": "psk", "psk": "x"}, "children": [{"name": "c", "local_ts": ["10.1.0.0/24"],
                                                                  "remote_ts": ["10.2.0.0/24"]}]}
    with pytest.raises(ConfigError, match=r"connections\[0\].ike_mode: aggressive mode exists only in IKEv1"):
        parse_config(config(manual=[], connections=[conn]))
    conn["ike_mode"] = "main"
    conn["children"][0]["protection"] = "ah+esp"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"connections\[0\].children\[0\].protection: IKEv2 negotiates one protocol"):
        parse_config(config(manual=[], connections=[conn]))
    conn["children"][0]["protection"] = "esp"  # type: ignore[index]
    conn["auth"] = {"method": "psk", "psk": ""}
    with pytest.raises(ConfigError, match=r"connections\[0\].auth.psk: the pre-shared key must not be empty"):
        parse_config(config(manual=[], connections=[conn]))


def test_file_errors_and_relative_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "gw",\n "local": }')
    with pytest.raises(ConfigError, match=r"bad.json:2:\d+: not valid JSON"):
        load_config(bad)
    good = tmp_path / "gw" / "gateway.json"
    good.parent.mkdir()
    good.write_text(json.dumps(config(state_dir=".")))
    assert load_config(good).state_dir == good.parent.resolve()


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(config()))
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "manual s2s: esp tunnel 198.51.100.10 <-> 198.51.100.20" in out and "configuration OK" in out
    path.write_text(json.dumps(config(local="nope")))
    assert main(["check", "--config", str(path)]) == 2
    assert "local: expected an IPv4 address" in capsys.readouterr().err


# --- certificate files of pubkey connections (read by load_config, not by parse_config) -----------------------


@pytest.fixture(scope="module")
def lab_ca() -> LabCa:
    return LabCa("cfgtest")


def _pubkey_config(tmp_path: Path, lab_ca: LabCa, files: dict[str, tuple[str, ...]]) -> Path:
    """A config whose key.pem, cert.pem and ca.pem hold the named parts ("key", "cert", "ca" or literal text);
    an empty tuple leaves the file out."""
    issued = lab_ca.issue("gw-a", "198.51.100.10")
    parts = {"key": issued.key_pem, "cert": issued.cert_pem, "ca": lab_ca.cert_pem}
    layout = {"key.pem": ("key",), "cert.pem": ("cert",), "ca.pem": ("ca",), **files}
    for name, names in layout.items():
        if names:
            (tmp_path / name).write_text("".join(parts.get(n, n) for n in names))
    conn = {"name": "c", "version": 2, "local": "198.51.100.10", "remote": "198.51.100.20",
            "auth": {"method": "pubkey", "key": "key.pem", "cert": "cert.pem", "ca": ["ca.pem"]},
            "children": [{"name": "c", "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"]}]}
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config(manual=[], connections=[conn])))
    return path


def test_certificate_files_are_checked(tmp_path: Path, lab_ca: LabCa) -> None:
    cfg = load_config(_pubkey_config(tmp_path, lab_ca, {}))
    assert cfg.connections[0].auth.cert == str(tmp_path / "cert.pem")
    # Our certificate followed by intermediate CA certificates is fine (the engines send them all).
    assert load_config(_pubkey_config(tmp_path, lab_ca, {"cert.pem": ("cert", "ca")})).connections


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"cert.pem": ("key",)}, r"connections\[0\].auth.cert: \S+/cert.pem holds no PEM certificate"),
        ({"cert.pem": ("ca", "cert")}, r"connections\[0\].auth.cert: the first certificate in \S+/cert.pem "
                                   r"\(CN=labctl cfgtest CA \(lab only\),O=labctl lab cfgtest\) does not belong to the "
                                   r"private key: put the gateway's own certificate first"),
        ({"key.pem": ("cert",)}, r"connections\[0\].auth.key: \S+/key.pem holds no usable unencrypted PEM private key"),
        ({"ca.pem": ("no certificate here",)}, r"connections\[0\].auth.ca\[0\]: \S+/ca.pem holds no PEM certificate"),
        ({"cert.pem": ()}, r"connections\[0\].auth.cert: cannot read \S+/cert.pem: No such file or directory"),
    ],
)
def test_certificate_file_errors(tmp_path: Path, lab_ca: LabCa, files: dict[str, tuple[str, ...]],
                                 message: str) -> None:
    path = _pubkey_config(tmp_path, lab_ca, files)
    with pytest.raises(ConfigError, match=rf"^{path}: {message}"):
        load_config(path)
    load_config(path, check_files=False)  # `ctl` only needs the control socket


def test_check_command_reports_a_certificate_file_error(tmp_path: Path, lab_ca: LabCa,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _pubkey_config(tmp_path, lab_ca, {"cert.pem": ("ca", "cert")})
    assert main(["check", "--config", str(path)]) == 2
    assert "does not belong to the private key" in capsys.readouterr().err
