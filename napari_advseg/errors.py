"""Typed errors that a user can cause, each with a message that says what to do."""


class AdvsegError(Exception):
    """Base class of the errors a user can cause and fix."""


class InvalidInputError(AdvsegError, ValueError):
    """An image, label volume or argument that cannot be used as it is."""


class CheckpointError(AdvsegError):
    """A checkpoint folder that is missing, corrupt, unsafe or of the wrong kind."""


class ResourceError(AdvsegError):
    """A request that needs more memory or disk than this machine has free."""
