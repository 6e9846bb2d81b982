"""Errors meant for the user: each message says what failed and how to fix it."""


class EmzooError(Exception):
    """Base class of errors that the CLI prints as one message, without a traceback."""

    exit_code = 1


class UsageError(EmzooError):
    """The command was called wrongly (bad option values, missing inputs)."""

    exit_code = 2


class InputError(EmzooError):
    """An input image cannot be read or does not fit the model."""


class PackageError(EmzooError):
    """A model package is invalid, unsafe, or its files do not match their hashes."""


class BackendError(EmzooError):
    """A weight format cannot be run (missing framework, device, or weights)."""
