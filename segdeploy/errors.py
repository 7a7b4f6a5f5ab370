"""Errors that the CLI reports as one line. Anything else is a bug and is reported as such."""


class SegdeployError(Exception):
    """A user-facing failure: bad input, missing file, wrong checkpoint. The message is the whole story."""

    exit_code = 2  # bad input


class ToleranceError(SegdeployError):
    """A graph that was made but does not compute what its reference computes, within its precision's tolerance
    (export's verification, an accuracy budget): exit 1, as validate's 'out of tolerance', not 2 (bad input)."""

    exit_code = 1


class UnknownModelError(SegdeployError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(SegdeployError):
    pass


class InputError(SegdeployError):
    """An input the model cannot take (unreadable image, wrong shape or size)."""


class ArtifactError(SegdeployError):
    """A corrupt, foreign or already-existing artifact."""
