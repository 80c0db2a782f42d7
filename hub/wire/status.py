"""One server interceptor mapping fraudhub errors to gRPC statuses.

Guarantees, for every RPC of a server built with :class:`ErrorInterceptor`
first in its interceptor list:

- A :class:`~client_sdk.core.errors.FraudhubError` becomes the status its class
  names (``grpc_status``), with a google.rpc.Status carrying an ``ErrorInfo``
  (domain ``fraudhub``, reason = the class's registered wire code, metadata for the
  classes that need it) and, for item errors, a ``BadRequest`` with one field
  violation per item (at most ``MAX_FIELD_VIOLATIONS``).  The wire format is
  ``client_sdk.wire.status``'s (``pack_status``), which maps it back.
- Any other exception becomes INTERNAL with the message "internal error"; it
  is logged with its type and code locations only, never its message, the
  request or the locals (they may hold tokens or values).
- A servicer that set its own status (``context.abort``) keeps it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, NoReturn

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from client_sdk.core.errors import FraudhubError
from client_sdk.wire.status import pack_status
from hub.wire.rpc import around

__all__ = ["DOCUMENTED_CODES", "INTERNAL_MESSAGE", "ErrorInterceptor", "to_rpc_status"]

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"

#: The status codes a fraudhub server may answer with (ADR 0003, "Errors";
#: ADR 0005 for the Exchange's partial answers): the codes of the
#: ``FraudhubError`` classes, and those gRPC itself produces for a call
#: (CANCELLED and DEADLINE_EXCEEDED by the caller, UNAVAILABLE while the
#: server stops, RESOURCE_EXHAUSTED past the server-wide message size).
#: INTERNAL, UNKNOWN and UNIMPLEMENTED for a listed method are bugs.
DOCUMENTED_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# Status messages are for people; keep them short (they travel in trailers).
MAX_MESSAGE_CHARS = 1000


def to_rpc_status(exc: FraudhubError) -> status_pb2.Status:
    """The google.rpc.Status for a fraudhub error, its message cut to MAX_MESSAGE_CHARS."""
    status = pack_status(exc)
    if len(status.message) > MAX_MESSAGE_CHARS:
        status.message = status.message[: MAX_MESSAGE_CHARS - 3] + "..."
    return status


def _abort(method: str, exc: Exception, context: grpc.ServicerContext) -> NoReturn:
    """Abort the call for ``exc``; always raises."""
    # ServicerContext.code() exists since grpcio 1.38; types-grpcio lacks it.
    code = context.code()  # type: ignore[attr-defined]
    if code is not None and code != grpc.StatusCode.OK:
        # The servicer chose its status itself (context.abort); keep it.
        raise exc
    if isinstance(exc, FraudhubError):
        context.abort_with_status(rpc_status.to_status(to_rpc_status(exc)))
    where = "; ".join(
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    )
    log.error("unexpected %s in %s at %s", type(exc).__name__, method, where)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions escaping a servicer (or an inner interceptor) to statuses.

    Put it FIRST in ``grpc.server(interceptors=[...])`` so that it also maps
    the errors of the interceptors after it (authentication, roles).
    """

    def intercept_service(
        self,
        continuation: Any,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method

        def abort(exc: Exception, context: grpc.ServicerContext) -> None:
            _abort(method, exc, context)

        return around(handler, on_error=abort)
