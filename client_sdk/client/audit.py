"""A regulator's client of the hub's Audit service.

A regulator is an institution with its own Ed25519 key and the regulator
role: it reaches the hub over the same authenticated channel as any client
(:func:`client_sdk.wire.channels.open_channel` with a
:class:`~client_sdk.wire.auth.BearerAuth`) and reads the signed log through
:class:`AuditLogClient`.  The client has the methods the hub's log verifier
reads through (``get_checkpoint``, ``events``, ``inclusion_proof``,
``consistency_proof``), so ``hub.audit.verify`` checks a live hub with it;
it trusts nothing the hub sends; the verifier does the checking.

Every gRPC failure becomes the fraudhub error of its status
(:func:`client_sdk.wire.status.errors_from_status`); nothing else is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

import grpc
from fraudhub.v1 import audit_pb2, audit_pb2_grpc

from client_sdk.wire.codecs import timestamp
from client_sdk.wire.status import errors_from_status

__all__ = ["AuditLogClient"]

_Reply = TypeVar("_Reply")


class AuditLogClient:
    """The Audit gRPC service, one method per question a regulator asks.

    ``timeout`` (seconds) bounds each unary call; ``list_events`` streams
    without a deadline, because a full read of a large log takes as long as it takes.
    """

    def __init__(self, channel: grpc.Channel, timeout: float = 60.0) -> None:
        self._stub = audit_pb2_grpc.AuditStub(channel)
        self._timeout = timeout

    def _unary(self, method: Callable[..., _Reply], request: object) -> _Reply:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise errors_from_status(exc) from None

    def get_checkpoint(self, fresh: bool) -> str:
        """The hub's signed checkpoint note (``fresh``: signed now, else its latest)."""
        reply = self._unary(self._stub.GetCheckpoint, audit_pb2.GetCheckpointRequest(fresh=fresh))
        return str(reply.note)

    def list_events(self, request: audit_pb2.ListEventsRequest) -> Iterator[tuple[int, bytes]]:
        """(leaf index, encoded event) of every event the request selects, in log order."""
        try:
            for record in self._stub.ListEvents(request):
                yield int(record.leaf_index), bytes(record.encoded)
        except grpc.RpcError as exc:
            raise errors_from_status(exc) from None

    def events(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """The events with leaf index in ``[start, end)``."""
        if start >= end:
            return iter(())
        return self.list_events(audit_pb2.ListEventsRequest(start=start, end=end))

    def policy(self, version: str) -> audit_pb2.PolicyText:
        """The canonical text the hub keeps for a policy version (the caller checks its hash)."""
        return self._unary(self._stub.GetPolicy, audit_pb2.GetPolicyRequest(version=version))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        request = audit_pb2.GetInclusionProofRequest(leaf_index=index, tree_size=size)
        return list(self._unary(self._stub.GetInclusionProof, request).hashes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        request = audit_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        return list(self._unary(self._stub.GetConsistencyProof, request).hashes)

    def report(self, since: datetime | None, until: datetime | None) -> audit_pb2.Report:
        """The hub's per-institution aggregates over ``[since, until)`` (from its indexes)."""
        request = audit_pb2.GetReportRequest()
        if since is not None:
            getattr(request, "from").CopyFrom(timestamp(since))
        if until is not None:
            request.to.CopyFrom(timestamp(until))
        return self._unary(self._stub.GetReport, request)
