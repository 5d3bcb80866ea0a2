"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class MedtransferError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MedtransferError):
    """The config names an unknown key or holds an invalid value."""


class DataError(MedtransferError):
    """A data file, column or label is missing or unreadable."""


class WeightsUnavailable(MedtransferError):
    """Pretrained weights are not on disk and cannot be downloaded."""


class TrainingDiverged(MedtransferError):
    """The loss became NaN or infinite; the run is stopped and recorded."""
