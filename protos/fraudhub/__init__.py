"""Generated protobuf and gRPC code of the fraudhub API (package ``fraudhub``).

Only transport adapters import it; the protocol core never does.
"""
