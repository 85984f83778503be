"""free_port never hands the same port out twice in one process: a simulator's port and a
connector's HTTP port are picked before either is bound."""

from __future__ import annotations

from connector.localredis import free_port


def test_ports_handed_out_are_distinct() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < 65536 for port in ports)
