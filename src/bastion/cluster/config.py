"""Cluster settings and the NATS names of one shard (stream, subjects, buckets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterConfig:
    servers: tuple[str, ...]
    shard: str = "main"
    replicas: int = 3
    #: leader lease: the KV entry expires this long after the last renewal
    lease_ttl: float = 2.0
    renew_every: float = 0.4
    #: a leader stops publishing this long before its lease could expire on the server
    lease_margin: float = 0.3
    #: standbys look for an expired lease this often
    poll_every: float = 0.1
    #: markets reopen in ``recovery`` for this long after a failover (OKX ran 20 minutes)
    recovery_window_ms: int = 20 * 60 * 1000
    #: leader marks a checkpoint message this often; every replica hashes its state there
    checkpoint_every: float = 10.0
    #: leader uploads a snapshot to the object store this often (0: never)
    snapshot_every: float = 300.0
    #: gateway -> leader request timeout, and how long a gateway retries "no leader"
    request_timeout: float = 5.0
    election_wait: float = 8.0
    #: how long a process waits for NATS at start before failing with NATS_UNREACHABLE
    connect_wait: float = 10.0

    @property
    def stream(self) -> str:
        return f"BASTION_{self.shard.upper()}"

    @property
    def log_subject(self) -> str:
        return f"bastion.{self.shard}.log"

    def cmd_subject(self, leader: str) -> str:
        """Commands go to the lease holder's own subject: a frozen ex-leader still subscribed
        to a shared one would swallow requests until the server noticed it was gone."""
        return f"bastion.{self.shard}.cmd.{leader}"

    @property
    def checkpoint_subject(self) -> str:
        return f"bastion.{self.shard}.checkpoint"

    def node_subject(self, node: str, verb: str) -> str:
        return f"bastion.{self.shard}.node.{node}.{verb}"

    def gateway_subject(self, gateway: str, verb: str) -> str:
        return f"bastion.{self.shard}.gateway.{gateway}.{verb}"

    @property
    def heartbeat_subject(self) -> str:
        return f"bastion.{self.shard}.heartbeat"

    @property
    def lease_bucket(self) -> str:
        return f"bastion_{self.shard}_lease"

    @property
    def status_bucket(self) -> str:
        """Operator status records, shared by every gateway (``bastion.cluster.sharedstatus``)."""
        return f"bastion_{self.shard}_status"

    @property
    def status_history_bucket(self) -> str:
        return f"bastion_{self.shard}_status_history"

    @property
    def status_lease_bucket(self) -> str:
        """Held by the one gateway that delivers status webhooks."""
        return f"bastion_{self.shard}_status_lease"

    @property
    def keys_bucket(self) -> str:
        """API keys, shared by every gateway (``bastion.cluster.sharedkeys``)."""
        return f"bastion_{self.shard}_keys"

    @property
    def snapshot_bucket(self) -> str:
        return f"bastion_{self.shard}_snapshots"
