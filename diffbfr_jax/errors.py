"""The errors a user's input can cause. `main` catches `UserError` once and prints `error: ...`;
every message names the file, the config field or the value at fault."""


class UserError(Exception):
  """A mistake in the input (a config, a file, a checkpoint), not a bug; the message says which."""


class ConfigError(UserError, ValueError):
  """A config field whose value does not fit; the message names the field and the value."""


class CheckpointError(UserError, ValueError):
  """A checkpoint that cannot serve where it was given; the message names it and why."""


class DecodeError(UserError, ValueError):
  """An image that cannot be decoded; the message names it."""


class ImageError(UserError, ValueError):
  """An image too small or of the wrong shape for what is asked of it; the message says why."""


class ConversionError(UserError, ValueError):
  """A file whose tensors do not fit the configured network; the message lists the keys."""


class FormatError(UserError, ValueError):
  """A file that is not a readable PyTorch zip checkpoint; the message names the file."""


class NonFiniteLossError(UserError, FloatingPointError):
  """A non-finite loss or state: the run stops; its message names the last good checkpoint."""


class NotFound(UserError, FileNotFoundError):
  """A file, folder, checkpoint or dataset that a config field names and that is not there."""


class MissingExtra(UserError, ImportError):
  """A package that a job needs and that only a pip extra installs (the message names it)."""


class Exists(UserError, FileExistsError):
  """An output that is already there and would be overwritten."""


class Stopped(UserError):
  """The run was stopped by a signal after saving its state; `exit_code` is 128 + the signal."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


class OtherProcessFailed(UserError):
  """Another process of a multi-process run failed; this one stopped at a barrier. The message
  holds the other process's error."""
