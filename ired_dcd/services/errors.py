"""Errors the service layer raises; the API maps each kind to one HTTP status."""


class ServiceError(Exception):
    """A request the service refuses; the message is safe to show to the user and names the field."""


class NotFound(ServiceError):
    """No such job, run or resource."""


class InvalidInput(ServiceError):
    """The input breaks a rule (unknown preset, bad override, bad seeds); nothing was stored."""


class Unauthorized(ServiceError):
    """No valid API token: missing, unknown or revoked."""


class Forbidden(ServiceError):
    """Signed in, but not allowed to do this (change another user's job)."""


class Conflict(ServiceError):
    """The request does not fit the current state (cancel a finished job, retry a succeeded one)."""


class Unavailable(ServiceError):
    """A dependency (the queue) cannot be reached."""


class QuotaExceeded(ServiceError):
    """The user's quota (GPU-hours or jobs in flight) does not leave room for this; the message has the numbers."""
