"""A real Redis Cluster for tests: 3 masters with one replica each, from redis-server processes
on loopback ports, joined with ``redis-cli --cluster create``."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port

NODE_TIMEOUT_MS = 1000
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
