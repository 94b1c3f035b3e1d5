"""The Salvus compute worker (a ZeroMQ fork server; see docs/protocol.md)."""
