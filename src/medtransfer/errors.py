"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class MedtransferError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MedtransferError):
    """The config names an unknown key or holds an invalid value."""


class SharedDataError(ConfigError):
    """A pretraining source (or checkpoint) shares patients or images with the data it initialises a model for."""


class DataError(MedtransferError):
    """A data file, column or label is missing or unreadable."""


class WeightsUnavailable(MedtransferError):
    """Pretrained weights are not on disk and cannot be downloaded."""


class MissingExtra(MedtransferError):
    """An optional dependency the command needs is not installed (the message names the pip extra)."""


class DiskFull(MedtransferError):
    """A write failed for lack of space (or quota); nothing half-written is left."""


def write_error(path, err: BaseException) -> MedtransferError:
    """The one-line error for a failed write; a full disk names the free space left on that file system."""
    if is_out_of_space(err):
        return DiskFull(f"cannot write {path}: no space left on the device ({free_mb(path):.1f} MB free on that "
                        "file system); free some space and rerun (finished runs are kept)")
    return MedtransferError(f"cannot write {path}: {getattr(err, 'strerror', None) or err}")


def is_out_of_space(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, or a library's wrapping of it (safetensors: 'os error 28'; SQLite: 'disk is full')."""
    import errno

    if isinstance(err, DiskFull):
        return True
    text = str(err)
    return (getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in text
            or "No space left" in text or "database or disk is full" in text)


def free_mb(path) -> float:
    """Free megabytes on the file system holding ``path`` (its nearest existing folder); 0 when unknown."""
    import shutil
    from pathlib import Path

    here = Path(path).absolute()
    for folder in (here, *here.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free / 1e6
            except OSError:
                return 0.0
    return 0.0


def as_disk_full(err: BaseException, path) -> "DiskFull | None":
    """``err`` as the DiskFull a study stops on (None when it is not about space); an OSError names its own
    file, else ``path`` (what was being written) is named."""
    if isinstance(err, DiskFull):
        return err
    if not is_out_of_space(err):
        return None
    found = write_error(getattr(err, "filename", None) or path, err)
    return found if isinstance(found, DiskFull) else None


class TrainingDiverged(MedtransferError):
    """The loss became NaN or infinite; the run is stopped and recorded."""


def reason_of(err: BaseException) -> str:
    """One line saying why: a project error's own message, else its type and the first line of its text
    (torch's errors carry pages of detail after it)."""
    if isinstance(err, MedtransferError):
        return str(err)
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
