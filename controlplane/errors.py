"""The domain error tree of the control plane.

Every error a use case raises on purpose is one of these; the gRPC layer maps them to status
codes in one place (``controlplane.api.errors``), anything else becomes INTERNAL::

    MeterlineError
    ├── InvalidArgument      bad input                      -> INVALID_ARGUMENT
    ├── NotFound             a named resource is missing    -> NOT_FOUND
    ├── AlreadyExists        a resource of that name exists -> ALREADY_EXISTS
    └── FailedPrecondition   wrong state for the operation  -> FAILED_PRECONDITION
"""

from __future__ import annotations


class MeterlineError(Exception):
    """Base of all deliberate domain errors; the message is safe to show to the caller."""


class InvalidArgument(MeterlineError):
    """The request is malformed or names impossible values."""


class NotFound(MeterlineError):
    """A named resource does not exist."""


class AlreadyExists(MeterlineError):
    """A resource with that name or key already exists."""


class FailedPrecondition(MeterlineError):
    """The resource is not in a state that allows the operation."""
