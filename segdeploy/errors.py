"""Errors that the CLI reports as one line. Anything else is a bug and is reported as such."""


class SegdeployError(Exception):
    """A user-facing failure: bad input, missing file, wrong checkpoint. The message is the whole story."""


class UnknownModelError(SegdeployError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(SegdeployError):
    pass


class InputError(SegdeployError):
    """An input the model cannot take (unreadable image, wrong shape or size)."""


class ArtifactError(SegdeployError):
    """A corrupt, foreign or already-existing artifact."""
