"""Exceptions that charattr raises on purpose.

Every subclass of `CharattrError` carries a message that is one complete sentence a user can act
on; the command line prints it without a traceback and exits non-zero.
"""


class CharattrError(Exception):
    """Base class: an error whose message is meant for the user, not for a debugger."""


class ConfigError(CharattrError):
    """A setting is wrong (bad path, bad database URL, unknown model, bad vocabulary file)."""


class ModelUnavailableError(CharattrError):
    """CLIP weights cannot be loaded; the message says how to make them available."""


class StoreError(CharattrError):
    """The results database cannot be reached or written."""


class ArtifactMismatchError(ConfigError):
    """A trained artefact (probes, fusion policy) was made for another CLIP model or vocabulary:
    it is readable, but using it would be wrong, so callers leave it out and say why."""


class NoSignalError(CharattrError):
    """An image has no signal to answer from (no tags, no CLIP): every answer would be `unknown`."""
