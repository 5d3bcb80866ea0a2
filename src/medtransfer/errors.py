"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class MedtransferError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MedtransferError):
    """The config names an unknown key or holds an invalid value."""


class DataError(MedtransferError):
    """A data file, column or label is missing or unreadable."""


class WeightsUnavailable(MedtransferError):
    """Pretrained weights are not on disk and cannot be downloaded."""


class MissingExtra(MedtransferError):
    """An optional dependency the command needs is not installed (the message names the pip extra)."""


class DiskFull(MedtransferError):
    """A write failed for lack of space (or quota); nothing half-written is left."""


def write_error(path, err: BaseException) -> MedtransferError:
    """The one-line error for a failed write; a full disk names the free space left."""
    import errno
    import shutil
    from pathlib import Path

    text = str(err)
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in text or "No space left" in text:
        try:
            free = shutil.disk_usage(Path(path).parent).free
        except OSError:
            free = 0
        return DiskFull(f"cannot write {path}: no space left on the device ({free / 1e6:.1f} MB free); "
                        "free some space and rerun (finished runs are kept)")
    return MedtransferError(f"cannot write {path}: {getattr(err, 'strerror', None) or text}")


class TrainingDiverged(MedtransferError):
    """The loss became NaN or infinite; the run is stopped and recorded."""


def reason_of(err: BaseException) -> str:
    """One line saying why: a project error's own message, else its type and the first line of its text
    (torch's errors carry pages of detail after it)."""
    if isinstance(err, MedtransferError):
        return str(err)
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
