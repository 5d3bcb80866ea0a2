"""Where initial weights come from: the ImageNet file cache, checkpoints, and our own saves.

All file and network side effects of the models layer live here. Downloads are bounded
by short timeouts (a hospital workstation is often offline, and a hung DNS lookup must
not look like a hung training run); loading never unpickles code (``weights_only=True``
or safetensors), because checkpoints get passed around between sites.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import socket
import threading
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, MedtransferError, WeightsUnavailable, reason_of, write_error
from .classifier import Classifier

try:   # torch >= 2.5: reading a whole pickled model safely (read_pickled_module_state) needs it
    from torch.serialization import safe_globals
except ImportError:
    safe_globals = None

Log = Callable[[str], None]

CONNECT_TIMEOUT_S = 4.0   # DNS + TCP connect to the weights host
READ_TIMEOUT_S = 30.0     # per socket read once connected (a slow link may still finish)
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema")
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


# ---------------------------------------------------------------- ImageNet file cache

def offline() -> bool:
    """``MEDTRANSFER_OFFLINE=1`` forbids any download attempt."""
    return os.environ.get("MEDTRANSFER_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``: the folder torchvision and timm already cache into."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def reachable(url: str, timeout: float | None = None) -> str | None:
    """None if ``url``'s host (or the configured proxy) accepts a TCP connection in time, else why not.

    Runs in a daemon thread joined with a timeout, because ``getaddrinfo`` ignores socket
    timeouts and can block for minutes when DNS is unreachable.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    target = urlparse(proxy) if proxy and not urllib.request.proxy_bypass(parsed.hostname or "") else parsed
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"cannot connect to {host}: {err.__class__.__name__}: {err}")

    thread = threading.Thread(target=connect, daemon=True, name=f"medtransfer-reach-{host}")
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer from {host} within {timeout:.0f} s"


def download(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` via a temp file + rename, so a failed download leaves nothing.

    Raises OSError (with the reason) on any failure. A sha256 prefix in the file name
    (torchvision's ``resnet18-f37072fd.pth`` convention) is checked.
    """
    problem = reachable(url)
    if problem:
        raise OSError(problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        expected = re.search(r"-([a-f0-9]{6,})\.", dest.name)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise OSError(f"checksum mismatch for {dest.name} (corrupt download)")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def fetch_cached_file(url: str, what: str, log: Log = print, folder: Path | None = None,
                      label: str | None = None) -> Path:
    """The cached copy of ``url`` in ``folder`` (default :func:`hub_checkpoint_dir`), downloading it if allowed.

    On failure raises WeightsUnavailable telling the user exactly which file to put where;
    ``label`` names the weights in that message (default ``ImageNet weights for WHAT``).
    """
    name = os.path.basename(urlparse(url).path)
    folder = hub_checkpoint_dir() if folder is None else Path(folder)
    path = folder / name
    if path.is_file():
        return path
    if offline():
        reason = "MEDTRANSFER_OFFLINE=1"
    else:
        log(f"downloading {name} for {what} from {url}")
        try:
            download(url, path)
            return path
        except OSError as err:
            reason = f"download failed: {err}"
    raise WeightsUnavailable(
        f"{label or f'ImageNet weights for {what}'} unavailable ({reason}): put {name} in {folder} (from {url})")


def xrv_cache_dir() -> Path:
    """``$MEDTRANSFER_XRV_DIR``, else torchxrayvision's own ``~/.torchxrayvision/models_data``.

    The default is the folder torchxrayvision itself downloads into (its
    ``utils.get_cache_dir``), written out so a file it already fetched is found without
    importing it; the variable points a shared workstation at one read-only copy.
    """
    override = os.environ.get("MEDTRANSFER_XRV_DIR", "").strip()
    return Path(override).expanduser() if override else Path("~/.torchxrayvision/models_data").expanduser()


# ---------------------------------------------------------------- reading weight files

class PickledObjects(ConfigError):
    """A torch file that holds Python objects besides tensors (e.g. a whole saved model)."""


class UnreadableWeights(ConfigError):
    """A file that holds no readable weights: truncated, empty, random bytes, another format.

    Made by :func:`unreadable`, which keeps ``reason`` (what is wrong, without advice) so a
    caller that knows where a good copy comes from (a cached download and its URL) can say so.
    """
    reason: str = ""


def unreadable(path: Path, reason: str) -> UnreadableWeights:
    """The one-line error for a damaged weights file: its path, what is wrong, and to replace it."""
    err = UnreadableWeights(f"{path}: {reason}; replace it with a good copy")
    err.reason = reason   # an attribute, not an __init__ argument, so the error still pickles across processes
    return err


def error_detail(err: BaseException) -> str:
    """One short line from a parser's error; torch's run to pages, its unpickler's name the fault after a preamble."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
    text = found.group(1).strip() if found else reason_of(err)
    return text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " ..."


def _refused_global(err: pickle.UnpicklingError) -> str | None:
    """The class or function torch's ``weights_only`` unpickler refused to build (None: the bytes are not a pickle
    it can read). The pattern is the one torch itself matches in its own message (``torch.serialization``)."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", str(err))
    return found.group(1) if found else None


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors = 8-byte little-endian header length, then a JSON header
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a ``weights_only`` torch file (never arbitrary pickles).

    Any damaged file is one line naming it (UnreadableWeights): files are copied between
    sites and caches, and a truncated copy must not end a run in a torch traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"checkpoint file not found: {path}")
    try:
        safetensors = _is_safetensors(path)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    if safetensors:
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise unreadable(path, f"not a readable safetensors file ({error_detail(err)})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            name = _refused_global(err)
            if name is None:
                raise unreadable(path, f"not a readable torch weights file ({error_detail(err)})") from None
            raise PickledObjects(
                f"{path}: refused to unpickle: it holds Python objects besides tensors ({name}); "
                "re-save it as a plain state_dict or safetensors") from None
        except Exception as err:   # damaged bytes trip torch's parsers in any way: KeyError, TypeError, ...
            raise unreadable(path, f"not a readable torch weights file ({error_detail(err)})") from None
        state = _unwrap(state, path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConfigError(f"{path}: holds no weight tensors")
    return tensors


def read_state_dict_or_module(path: Path) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict`, also accepting a whole saved ``nn.Module`` (see :func:`read_pickled_module_state`)."""
    try:
        return read_state_dict(path)
    except PickledObjects:
        return read_pickled_module_state(path)


_MODULE_PACKAGES = ("torch.nn.", "torchvision.", "torchxrayvision.")


def read_pickled_module_state(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a whole ``nn.Module`` saved with ``torch.save(model)`` (torchxrayvision's format).

    The only classes the unpickler may build are ``nn.Module`` subclasses from torch,
    torchvision or torchxrayvision, each checked by :func:`_module_class` before it is
    allowed. torch's zip format (torch >= 1.6) is read ``weights_only``, allowing each class
    as torch's unpickler names it. The legacy format (torchxrayvision's release files predate
    torch 1.6) names every module class in a record ``weights_only`` always refuses, so it is
    read by the stdlib unpickler limited to those classes and the few functions that rebuild
    tensors (:func:`_legacy_pickle`). Either way building a module runs no ``__init__`` and no
    code the file chose, so a tampered file can at worst fail to load. torchxrayvision's own
    classes must be importable: that is what the ``xrv`` extra is for.
    """
    path = Path(path)
    if safe_globals is None:
        raise WeightsUnavailable(f"{path} is a whole pickled model; reading it safely needs torch>=2.5 "
                                 f"(this is torch {torch.__version__})")
    allowed: dict[str, type] = {}
    while True:   # once per class torch's unpickler names (the legacy format's unpickler checks them itself)
        try:
            if zipfile.is_zipfile(path):
                with safe_globals(list(allowed.values())):
                    module = torch.load(path, map_location="cpu", weights_only=True)
            else:
                module = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_legacy_pickle(path))
            break
        except MedtransferError:   # a class refused by _module_class
            raise
        except pickle.UnpicklingError as err:
            name = _refused_global(err)
            if name is None or name in allowed:
                raise unreadable(path, f"not a readable torch model file ({error_detail(err)})") from None
            allowed[name] = _module_class(name, path)
        except Exception as err:   # damaged bytes trip torch's parsers in any way: KeyError, TypeError, ...
            raise unreadable(path, f"not a readable torch model file ({error_detail(err)})") from None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{path}: expected a saved model or state_dict, got {type(module).__name__}")
    for sub in module.modules():   # modules pickled by torch < 1.6 lack this attribute (pytorch#42242)
        if not hasattr(sub, "_non_persistent_buffers_set"):
            sub._non_persistent_buffers_set = set()
    return dict(module.state_dict())


# What a legacy saved model names besides its module classes.
_TENSOR_GLOBALS = {("collections", "OrderedDict"), ("builtins", "set"),
                   ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}


def _legacy_pickle(path: Path) -> SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose unpickler builds only :data:`_TENSOR_GLOBALS` and allowed
    module classes: the stdlib's documented way to restrict unpickling (torch maps storage names itself)."""
    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            module = "builtins" if module == "__builtin__" else module   # pickle protocol 2 writes Python 2's name
            if (module, name) in _TENSOR_GLOBALS:
                return super().find_class(module, name)
            return _module_class(f"{module}.{name}", path)

    return SimpleNamespace(__name__="medtransfer.restricted_pickle", Unpickler=Unpickler,
                           load=lambda file, **kwargs: Unpickler(file, **kwargs).load())


def _module_class(dotted: str, path: Path) -> type:
    """The class ``dotted`` names, if it is an nn.Module from an allowed package; else why not, in one line."""
    module_name, _, attr = dotted.rpartition(".")
    if not dotted.startswith(_MODULE_PACKAGES):
        raise ConfigError(f"{path}: refused to unpickle {dotted} (only torch, torchvision and torchxrayvision "
                          "modules are allowed in a saved model)")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        extra = " (install the extra: pip install 'medtransfer[xrv]')" if dotted.startswith("torchxrayvision.") else ""
        raise WeightsUnavailable(f"{path} is a saved {dotted} model, which needs {err.name or module_name} to "
                                 f"read{extra}") from None
    except AttributeError:
        raise ConfigError(f"{path}: saved with {dotted}, which this version of {module_name} does not have") from None
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        raise ConfigError(f"{path}: refused to unpickle {dotted}: not a torch module class")
    return found


def _unwrap(obj, path: Path) -> Mapping:
    """Accept the usual training-checkpoint wrappers: {"state_dict": ...}, {"model": ...}."""
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def _modern_densenet_key(key: str) -> str:
    match = _DENSENET_LEGACY.match(key)
    return match.group(1) + match.group(2) if match else key


def remap_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``, as torchvision does for its own files."""
    return {_modern_densenet_key(key): value for key, value in state.items()}


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit a first-conv kernel to ``in_chans`` inputs without changing what it computes on grey images.

    RGB -> 1 channel sums the kernel over colour (a grey image copied to R, G and B gives
    identical activations), as fastai and timm do; other counts repeat and rescale (timm).
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // have)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (have / in_chans)


# ---------------------------------------------------------------- checkpoints into a Classifier

def _classifier_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map each checkpoint key to the Classifier key it would load into (original -> ours)."""
    def strip(key: str) -> str:
        return key[len("module."):] if key.startswith("module.") else key  # DataParallel saves
    stripped = {original: _modern_densenet_key(strip(original)) for original in state}
    plain = not any(key.startswith("backbone.") for key in stripped.values())
    return {original: f"backbone.{key}" if plain else key for original, key in stripped.items()}


def load_checkpoint_into(model: Classifier, path: Path, log: Log = print) -> tuple[int, int]:
    """Copy every checkpoint tensor whose name and shape fit ``model``; return (loaded, skipped).

    Accepts a medtransfer run's weights (``backbone.*`` / ``head.*``) or a plain backbone
    state_dict (torchvision / timm names; its ``fc`` / ``classifier`` head finds no match
    and is skipped). A head of another size is skipped, so a source task with 14 labels
    can initialise a 2-class target. A 3-channel first conv is summed to grey.
    """
    path = Path(path)
    state = read_state_dict(path)
    target = model.state_dict()
    matched: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for original, key in _classifier_keys(state).items():
        tensor = state[original]
        want = target.get(key)
        if want is not None and tensor.ndim == 4 and want.ndim == 4 and tensor.shape[1] != want.shape[1] \
                and want.shape[1] == model.in_chans and tensor.shape[1] in (1, 3) \
                and tensor.shape[0] == want.shape[0] and tensor.shape[2:] == want.shape[2:]:
            tensor = adapt_first_conv(tensor, model.in_chans)
        if want is not None and tensor.shape == want.shape:
            matched[key] = tensor
        else:
            skipped.append(original)
    backbone_keys = [k for k in target if k.startswith("backbone.")]
    n_backbone = sum(k in matched for k in backbone_keys)
    if n_backbone == 0:
        raise ConfigError(f"{path}: none of its {len(state)} tensors fit {model.arch}'s backbone "
                          "(saved from another architecture?)")
    model.load_state_dict(matched, strict=False)
    head = ", and the head" if any(k.startswith("head.") for k in matched) else ""
    names = f" ({', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''})" if skipped else ""
    log(f"init checkpoint:{path}: loaded {n_backbone} of {len(backbone_keys)} backbone tensors{head}, "
        f"skipped {len(skipped)}{names}")
    missing = [k for k in backbone_keys if k not in matched]
    if missing:
        log(f"  {len(missing)} backbone tensors not in the checkpoint keep their scratch init "
            f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''})")
    return len(matched), len(skipped)


# ---------------------------------------------------------------- our own weight files

def save_weights(model: torch.nn.Module | Mapping[str, torch.Tensor], path: Path,
                 metadata: dict[str, str] | None = None) -> None:
    """Write a model (or a state_dict such as FitResult.best_state) as safetensors.

    safetensors refuses shared or non-contiguous tensors; shared ones are copied, so every
    name survives and :func:`load_checkpoint_into` can match by name.
    """
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    meta = {"format": "pt"}
    if isinstance(model, torch.nn.Module) and hasattr(model, "arch"):
        meta.update(medtransfer_arch=str(model.arch), num_outputs=str(getattr(model, "num_outputs", "")))
    meta.update(metadata or {})
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in seen:
            tensor = tensor.clone()
        seen.add(storage)
        out[key] = tensor
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_file(out, str(path), metadata=meta)
    except Exception as err:   # safetensors reports a full disk as its own error type, with the OS text
        path.unlink(missing_ok=True)
        raise write_error(path, err) from None


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True) -> torch.nn.Module:
    """Load a file written by :func:`save_weights` back into the same architecture."""
    state = read_state_dict(Path(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(f"{path}: does not fit {getattr(model, 'arch', type(model).__name__)} ({first})") from None
    return model
