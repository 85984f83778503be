"""A real Redis Cluster for tests: 3 masters with one replica each, from redis-server processes
on loopback ports, joined with ``redis-cli --cluster create``."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port

NODE_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class SlotMove:
    slot: int
    source: RedisServer
    target: RedisServer
    source_id: str
    target_id: str


READY_TIMEOUT = 60.0


class RedisClusterProcesses:
    """Six nodes; ``masters()`` and ``stop_master_of()`` for failover tests."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        for index in range(masters * (1 + replicas)):
            port = free_port()
            node_dir = directory / f"node-{index}"
            # The cluster bus defaults to port + 10000, which may be taken or out of range.
            args = ["--cluster-port", str(free_port()), "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", str(node_dir / "nodes.conf")]
            args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
            args += ["--appendonly", "yes", "--appendfsync", "always"]
            args += ["--cluster-replica-validity-factor", "0"]
            self.nodes.append(RedisServer(node_dir, args, port=port))
        self.replicas = replicas

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = [cli, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        created = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            output = (created.stdout + created.stderr)[-3000:]
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
        self.wait_healthy()

    def wait_healthy(self, exclude: set[int] | None = None) -> None:
        """Until every running node reports ``cluster_state:ok`` and all slots are served."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if all(
                self._node_ok(node)
                for node in self.nodes
                if node.running and node.port not in (exclude or set())
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.05)  # polling the cluster's own state: there is nothing to await

    @staticmethod
    def _node_ok(node: RedisServer) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=2)
        try:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text
        except redis.RedisError:
            return False
        finally:
            client.close()

    def master_of(self, key: str) -> RedisServer:
        """The node currently serving ``key``'s slot as master."""
        client = redis.RedisCluster(host="127.0.0.1", port=self._any_running().port)
        try:
            node = client.get_node_from_key(key, replica=False)
            return next(n for n in self.nodes if n.port == node.port)
        finally:
            client.close()

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        found = []
        for node in self.nodes:
            if not node.running:
                continue
            client = redis.Redis(port=node.port, socket_timeout=5)
            try:
                if client.execute_command("ROLE")[0] == b"master":
                    found.append(node)
            finally:
                client.close()
        return found

    def begin_slot_move(self, key: str) -> SlotMove:
        """Start moving ``key``'s slot to another master the way ``redis-cli --cluster reshard``
        does (IMPORTING/MIGRATING, then MIGRATE of its keys): from now on a client writing those
        keys on the old master gets ASK. :meth:`finish_slot_move` hands the slot over (MOVED)."""
        source = self.master_of(key)
        target = next(node for node in self.masters() if node.port != source.port)
        src = redis.Redis(port=source.port, socket_timeout=10)
        dst = redis.Redis(port=target.port, socket_timeout=10)
        try:
            slot = int(src.execute_command("CLUSTER", "KEYSLOT", key))
            move = SlotMove(
                slot,
                source,
                target,
                src.execute_command("CLUSTER", "MYID").decode(),
                dst.execute_command("CLUSTER", "MYID").decode(),
            )
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", move.source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", move.target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
                src.execute_command(
                    "MIGRATE", "127.0.0.1", target.port, "", 0, 10000, "KEYS", *keys
                )
        finally:
            src.close()
            dst.close()
        return move

    def finish_slot_move(self, move: SlotMove) -> None:
        """Assign the slot to its new master on every master (target and source first)."""
        ports = [move.target.port, move.source.port]
        ports += [node.port for node in self.masters() if node.port not in ports]
        for port in ports:
            client = redis.Redis(port=port, socket_timeout=10)
            try:
                client.execute_command("CLUSTER", "SETSLOT", move.slot, "NODE", move.target_id)
            finally:
                client.close()

    def _any_running(self) -> RedisServer:
        return next(node for node in self.nodes if node.running)

    def stop_gracefully(self, node: RedisServer) -> None:
        """SIGTERM: Redis 7 lets lagging replicas catch up before it exits."""
        assert node.process is not None
        node.process.terminate()
        node.process.wait(30)
        node.process = None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
