"""Decryption evidence and GSO splitting: ESP packets made by scapy's independent implementation, opened by
tshark with an `esp_sa` table like the gateways export; wrong keys or foreign inner traffic must FAIL."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap

from labctl.checks.decryption import Flow, check_decryption
from labctl.checks.frames import read_frames
from labctl.checks.gso import segment_size, split_gso
from labctl.checks.keytables import merge_tables, preferences, refused_rows, tshark_command

GW_A, GW_B = "198.51.100.10", "198.51.100.20"
HOST_A, HOST_B = "10.1.0.10", "10.2.0.10"
KEY_AB = bytes(range(16)) + b"SALT"  # AES-GCM-128 key || 4-byte salt (RFC 4106 §8.1)
KEY_BA = bytes(range(16, 32)) + b"salt"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
FLOW = Flow(HOST_A, HOST_B, 5399)


def _sa(spi: int, key: bytes, src: str, dst: str, udp: bool = False) -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key, tunnel_header=IP(src=src, dst=dst),
                               nat_t_header=UDP(sport=4500, dport=4500) if udp else None)


def _row(src: str, dst: str, spi: int, key: bytes) -> str:
    # The 8-field esp_sa UAT record the gateway writes (see /work/shared/notes/environment.md).
    return f'"IPv4","{src}","{dst}","0x{spi:08x}","AES-GCM with 16 octet ICV [RFC4106]","0x{key.hex()}","NULL",""'


def _keys(tmp_path: Path, key_ab: bytes = KEY_AB) -> Path:
    gw_a, gw_b = tmp_path / "gw-a", tmp_path / "gw-b"
    gw_a.mkdir()
    gw_b.mkdir()
    # Both ends export both directions: merging must deduplicate.
    rows = _row(GW_A, GW_B, 0x1000, key_ab) + "\n" + _row(GW_B, GW_A, 0x2000, KEY_BA) + "\n"
    (gw_a / "esp_sa").write_text(rows)
    (gw_b / "esp_sa").write_text(rows)
    merge_tables([gw_a, gw_b], tmp_path / "keys")
    return tmp_path / "keys"


def _traffic(udp: bool = False, extra: list[Packet] | None = None) -> list[Packet]:
    ab, ba = _sa(0x1000, KEY_AB, GW_A, GW_B, udp), _sa(0x2000, KEY_BA, GW_B, GW_A, udp)
    inner_ab = [IP(src=HOST_A, dst=HOST_B) / ICMP(type=8), IP(src=HOST_B, dst=HOST_A) / ICMP(type=8),
                IP(src=HOST_A, dst=HOST_B) / TCP(sport=40000, dport=5399) / Raw(b"x" * 100)]
    inner_ba = [IP(src=HOST_B, dst=HOST_A) / ICMP(type=0), IP(src=HOST_A, dst=HOST_B) / ICMP(type=0),
                IP(src=HOST_B, dst=HOST_A) / TCP(sport=5399, dport=40000, flags="A")]
    packets = [ETH / ab.encrypt(p) for p in inner_ab + (extra or [])]
    return packets + [ETH / ba.encrypt(p) for p in inner_ba]


def test_merged_tables_deduplicate_and_stay_private(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    assert len((keys / "esp_sa").read_text().splitlines()) == 2
    assert (keys / "esp_sa").stat().st_mode & 0o077 == 0
    assert "uat:esp_sa:" in tshark_command(tmp_path / "x.pcap", keys)


def test_the_exported_keys_decrypt_the_test_traffic(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), _traffic())
    result = check_decryption(read_frames(pcap, preferences(_keys(tmp_path))), FLOW)
    assert result.status == "pass", result.details
    assert result.observed.startswith("6/6 ESP frames decrypted")


def test_wrong_keys_fail(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), _traffic())
    result = check_decryption(read_frames(pcap, preferences(_keys(tmp_path, key_ab=bytes(20)))), FLOW)
    assert result.status == "fail"
    # A wrong key yields garbage; now and then tshark reads a plausible next header in it, but never the traffic.
    assert f"no decrypted echo-request {HOST_A} -> {HOST_B}" in result.details
    assert f"no decrypted tcp {HOST_A} -> {HOST_B}" in result.details


def test_without_keys_nothing_decrypts(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), _traffic())
    assert check_decryption(read_frames(pcap), FLOW).status == "fail"


def test_inner_traffic_that_is_not_the_test_traffic_fails(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), _traffic(extra=[IP(src=HOST_A, dst="10.2.0.99") / ICMP()]))
    result = check_decryption(read_frames(pcap, preferences(_keys(tmp_path))), FLOW)
    assert result.status == "fail"
    assert any("not the test traffic" in d and "10.2.0.99" in d for d in result.details)


def test_missing_direction_fails(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), _traffic()[:3])
    result = check_decryption(read_frames(pcap, preferences(_keys(tmp_path))), FLOW)
    assert f"no decrypted echo-reply {HOST_B} -> {HOST_A}" in result.details


def test_gso_super_packets_are_split_into_the_datagrams_of_the_wire(tmp_path: Path) -> None:
    sa = _sa(0x1000, KEY_AB, GW_A, GW_B, udp=True)
    segments = [bytes(sa.encrypt(IP(src=HOST_A, dst=HOST_B) / ICMP(type=8, seq=i) / Raw(b"p" * 64))[UDP].payload)
                for i in range(3)]
    assert len({len(s) for s in segments}) == 1
    assert segment_size(b"".join(segments)) == len(segments[0])
    assert segment_size(segments[0]) is None
    assert segment_size(b"\0\0\0\0" + segments[0]) is None  # RFC 3948 non-ESP marker: IKE, never split
    run = ETH / IP(src=GW_A, dst=GW_B) / UDP(sport=4500, dport=4500) / Raw(b"".join(segments))
    pcap = tmp_path / "gso.pcap"
    wrpcap(str(pcap), [run])
    assert split_gso(pcap) == 1
    packets = rdpcap(str(pcap))
    assert [len(p[UDP].payload) for p in packets] == [len(s) for s in segments]
    assert all(p[IP].len == 20 + 8 + len(segments[0]) for p in packets)
    frames = read_frames(pcap, preferences(_keys(tmp_path)))
    assert [f.icmp_types for f in frames] == [(8,), (8,), (8,)]
    assert split_gso(pcap) == 0


def test_rows_tshark_refuses_are_reported_and_left_out(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    bogus = '"IPv4","1.1.1.1","2.2.2.2","0x00001000","No Such Cipher [RFC0]","0x00","NULL",""'
    (keys / "esp_sa").write_text(bogus + "\n" + _row(GW_A, GW_B, 0x1000, KEY_AB) + "\n")
    assert [row for row, _ in refused_rows(keys)] == [bogus]
    assert not any("No Such Cipher" in p for p in preferences(keys))
