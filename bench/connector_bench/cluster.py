"""A private local Redis Cluster for the scale scenario: redis-server processes joined with
``redis-cli --cluster create``.

Every node is a child of the run's :class:`~connector_bench.procs.Processes` (own process group,
parent-death signal, stopped at the end of the run like every other child), and so is the
short-lived ``redis-cli``. Nodes have no persistence (like the single redis-server of the other
scenarios); the cluster bus port is chosen explicitly because ``port + 10000`` may be taken or
out of range. Masters only by default: replicas add CPU on this machine and change nothing the
connector does on the write path (it writes to masters).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from connector.localredis import free_port
from connector_bench.procs import BenchError, Managed, Processes, start_redis

NODE_TIMEOUT_MS = 5000
CREATE_TIMEOUT = 60.0
HEALTHY_TIMEOUT = 60.0
SLOTS = 16384
MIN_MASTERS = 3  # redis-cli --cluster create refuses fewer


@dataclass(slots=True)
class LocalCluster:
    """The nodes of a started cluster (masters first as created) and a URL of one of them."""

    nodes: list[Managed]
    ports: list[int]
    masters: int
    replicas: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"


def parse_cluster_info(info: object) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict, whether redis-py parsed it already or returned the text."""
    if isinstance(info, dict):
        return {str(name): str(value) for name, value in info.items()}
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep:
            fields[name] = value
    return fields


def cluster_state_ok(fields: dict[str, str], nodes: int) -> bool:
    """True when the node says the cluster is ok, every slot is served and it knows all
    ``nodes`` members."""
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_ok") == str(SLOTS)
        and fields.get("cluster_known_nodes") == str(nodes)
    )


def start_cluster(processes: Processes, masters: int = 3, replicas: int = 0) -> LocalCluster:
    """Start ``masters * (1 + replicas)`` nodes, create the cluster, wait until it is healthy."""
    if masters < MIN_MASTERS:
        raise BenchError(f"a Redis Cluster needs at least {MIN_MASTERS} masters, not {masters}")
    cli = shutil.which("redis-cli")
    if cli is None:
        raise BenchError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
    nodes: list[Managed] = []
    ports: list[int] = []
    for index in range(masters * (1 + replicas)):
        name = f"redis-node-{index}"
        config = processes.workdir / f"{name}-data" / "nodes.conf"
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(config),
            "--cluster-port",
            str(free_port()),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        ]
        node, url = start_redis(processes, name, args)
        nodes.append(node)
        ports.append(int(url.rsplit(":", 1)[1].split("/", 1)[0]))
    argv = [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)]
    argv += ["--cluster-replicas", str(replicas), "--cluster-yes"]
    create = processes.start("redis-cli-create", argv, capture_stdout=True)
    if not create.wait_exit(CREATE_TIMEOUT):
        raise BenchError(f"redis-cli --cluster create did not finish in {CREATE_TIMEOUT:g} s")
    code = create.stop()
    if code != 0:
        output = "\n".join(create.stdout_lines()[-15:])
        raise BenchError(f"redis-cli --cluster create failed ({code}):\n{output}")
    cluster = LocalCluster(nodes, ports, masters, replicas)
    wait_healthy(cluster)
    return cluster


def wait_healthy(cluster: LocalCluster, timeout: float | None = None) -> None:
    """Until every node reports a healthy cluster that it fully knows (polling its own state)."""
    timeout = HEALTHY_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    pending = list(cluster.ports)
    while pending:
        pending = [port for port in pending if not _node_ok(port, len(cluster.ports))]
        if not pending:
            return
        for node in cluster.nodes:
            if node.exited():
                raise BenchError(f"{node.name} exited while the cluster formed:\n{node.log_tail()}")
        if time.monotonic() >= deadline:
            raise BenchError(f"the cluster did not become healthy in {timeout:g} s ({pending})")
        time.sleep(0.05)


def _node_ok(port: int, nodes: int) -> bool:
    client = Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        return cluster_state_ok(parse_cluster_info(client.cluster("INFO")), nodes)
    except RedisError:
        return False
    finally:
        client.close()
