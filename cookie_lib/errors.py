"""The exceptions a user can act on, shared by every module and command line of the library.

Each one's message is the whole story (it names the file, key or folder and what to do), so a command
line prints it as one line ``error: <message>`` and exits with status 2 (:func:`cookie_lib.runtime.cli`);
:data:`USER_ERRORS` is that set. This module imports nothing of the library, so that config, data and
runtime can all raise these without importing one another.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and what is allowed."""


class DataValidationError(ValueError):
    """A corpus failed validation; the message lists every problem found (file and record named)."""


class RunFolderLockedError(RuntimeError):
    """Another process holds the run folder's lock (see :class:`cookie_lib.runtime.RunLock`)."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used for ``--resume``: unreadable, or written with another config."""


class AtomicWriteError(OSError):
    """Writing a file failed (e.g. ENOSPC); the previous version of the file is untouched.

    Keeps the errno of the underlying OSError; ``filename`` is the destination path.
    """

    def __str__(self) -> str:  # the message already names the file; OSError's default repeats it
        return str(self.strerror)


# the errors a command line reports as one line ``error: <message>`` (exit 2) instead of a traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataValidationError, RunFolderLockedError,
                                                CheckpointError, AtomicWriteError)
