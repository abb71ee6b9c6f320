"""Load FLAME's pickles without chumpy and without executing arbitrary code.

FLAME's ``generic_model.pkl`` is a Python-2 pickle (read with ``encoding="latin1"``) of a dict holding numpy
arrays, a scipy sparse ``J_regressor`` and chumpy ``Ch`` objects; ``FLAME_masks.pkl`` holds numpy arrays;
DECA/MICA's ``landmark_embedding.npy`` is ``np.save`` of a dict (a pickled 0-d object array) that also
holds two torch tensors. ``pickle.load`` would import and call whatever global a file names (``os.system``,
``builtins.eval``, ...). Here every global goes through an allowlist (:data:`FLAME_ALLOWED_GLOBALS`,
``"module.name" -> object``); anything else raises ``pickle.UnpicklingError`` naming the global and the file
before anything is called. Allowed are only:

- numpy array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``) under
  both ``numpy.core`` (numpy 1) and ``numpy._core`` (numpy 2) names;
- scipy ``csc_matrix`` / ``csr_matrix`` (old ``scipy.sparse.csc`` and new ``scipy.sparse._csc`` names);
- ``set``, ``frozenset`` and ``collections.OrderedDict`` (chumpy's state and torch's tensor pickles use them);
- ``_codecs.encode`` for latin-1 only (how Python 3 writes ``bytes`` at protocol 2, e.g. array data);
- chumpy classes (``chumpy.ch``, ``chumpy.ch_ops``, ``chumpy.reordering``) mapped to :class:`ChumpyStandIn`,
  which only keeps the pickled state (the array lives in ``x``);
- ``copy_reg._reconstructor`` (how protocols 0 and 1 pickle instances of plain classes) for those stand-ins
  and the sparse matrices only, with base ``object`` and no base state (:func:`_reconstruct_object`), and
  ``object`` itself as that base;
- torch's tensor rebuild functions mapped to :class:`UndecodedTorchTensor` (nothing of torch is called).

Python-2 module names (``__builtin__``, ``copy_reg``) are read as their Python-3 names. Every error names the file.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

#: The first bytes of a ``.npy`` file (``np.save``).
NPY_MAGIC = b"\x93NUMPY"

#: Python-2 module names as Python 3 knows them.
_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

#: Modules whose every class is a chumpy expression node.
CHUMPY_MODULES = ("chumpy.ch", "chumpy.ch_ops", "chumpy.reordering")


class ChumpyStandIn:
    """Stand-in for a chumpy object: keeps the pickled ``__dict__`` and converts to a numpy array.

    A plain ``chumpy.ch.Ch`` stores its value in ``x``. Other chumpy nodes (``ch_ops.add``,
    ``reordering.transpose``, ...) are lazy expressions of their operands; they are kept but not evaluated.
    """

    chumpy_class = "chumpy.ch.Ch"

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.chumpy_class}: expected a dict state, got {type(state).__name__}")
        self.state = state

    def to_numpy(self) -> np.ndarray:
        """The array this object stands for: ``x`` (itself converted if it is a chumpy object)."""
        if "x" not in self.state:
            raise ValueError(
                f"{self.chumpy_class} is a chumpy expression (fields {sorted(self.state)}), not a stored array; "
                "convert the file once with chumpy installed (np.savez of each field as np.array(value))"
            )
        return to_numpy(self.state["x"])


class UndecodedTorchTensor:
    """Stand-in for a torch tensor pickled inside a numpy pickle (DECA's dynamic landmark tables).

    Its bytes would need ``torch.load`` to decode; they are dropped, so nothing of torch runs.
    """

    def __init__(self, *args) -> None:
        pass


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocols < 3: ``encode(text, "latin1")``, nothing else."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r} (only latin1)")
    return text.encode("latin1")


#: the classes ``copy_reg._reconstructor`` may create (:func:`_reconstruct_object`)
RECONSTRUCTED_CLASSES = (ChumpyStandIn, scipy.sparse.csc_matrix, scipy.sparse.csr_matrix)


def _reconstruct_object(cls: object, base: object, state: object) -> object:
    """``copy_reg._reconstructor(cls, object, None)`` for a chumpy stand-in or a scipy sparse matrix: Python 2
    pickles an instance of a plain class at protocols 0 and 1 so, then its ``__dict__``; like protocol 2's
    ``cls.__new__(cls)``, it is ``object.__new__(cls)``. Another class, another base or a base state is refused."""
    if not (isinstance(cls, type) and issubclass(cls, RECONSTRUCTED_CLASSES)) or base is not object or state is not None:
        raise pickle.UnpicklingError(
            f"refused copy_reg._reconstructor({getattr(cls, '__name__', cls)!r}, {getattr(base, '__name__', base)!r}, "
            f"{state!r}): only chumpy and scipy sparse classes, with base object and no base state"
        )
    return object.__new__(cls)


def _chumpy_class(module: str, name: str) -> type[ChumpyStandIn]:
    return type(name, (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}", "__module__": __name__})


_CHUMPY_CLASSES: dict[str, type[ChumpyStandIn]] = {}


def _numpy_globals() -> dict[str, object]:
    from numpy._core import multiarray, numeric

    allowed: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[f"{package}.multiarray._reconstruct"] = multiarray._reconstruct
        allowed[f"{package}.multiarray.scalar"] = multiarray.scalar
        allowed[f"{package}.numeric._frombuffer"] = numeric._frombuffer
    return allowed


def _sparse_globals() -> dict[str, object]:
    allowed: dict[str, object] = {}
    for fmt, cls in (("csc", scipy.sparse.csc_matrix), ("csr", scipy.sparse.csr_matrix)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[f"{module}.{fmt}_matrix"] = cls
    return allowed


#: ``"module.name"`` -> what the unpickler gets for it. Chumpy classes are matched by module
#: (:data:`CHUMPY_MODULES`), not listed here.
FLAME_ALLOWED_GLOBALS: dict[str, object] = {
    **_numpy_globals(),
    **_sparse_globals(),
    "_codecs.encode": _encode_latin1,
    "copyreg._reconstructor": _reconstruct_object,
    "builtins.object": object,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor_v2": UndecodedTorchTensor,
    "torch._utils._rebuild_tensor": UndecodedTorchTensor,
    "torch.storage._load_from_bytes": UndecodedTorchTensor,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` answers only from an allowlist (see module docstring)."""

    def __init__(self, file, allowed: dict[str, object], allow_chumpy: bool) -> None:
        super().__init__(file, encoding="latin1")
        self.allowed = allowed
        self.allow_chumpy = allow_chumpy

    def find_class(self, module: str, name: str) -> object:
        qualified = f"{_PYTHON2_MODULES.get(module, module)}.{name}"
        if qualified in self.allowed:
            return self.allowed[qualified]
        if self.allow_chumpy and module in CHUMPY_MODULES:
            return _CHUMPY_CLASSES.setdefault(qualified, _chumpy_class(module, name))
        raise pickle.UnpicklingError(
            f"refused global '{module}.{name}' (only numpy arrays, scipy sparse matrices and "
            "chumpy arrays may be loaded from FLAME files)"
        )

    def persistent_load(self, pid) -> object:
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def _skip_npy_header(fh, path: Path) -> None:
    """Move ``fh`` past a ``.npy`` header, checking that the array is a pickled object array."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        _, _, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype != np.dtype(object):
        raise ValueError(f"{path}: expected a .npy file of pickled objects (np.save of a dict), got dtype {dtype}")


def load_restricted_pickle(
    path: str | Path, allowed: dict[str, object] | None = None, allow_chumpy: bool = True
) -> object:
    """Unpickle ``path`` (a pickle, or a ``.npy`` of pickled objects) allowing only listed globals.

    Args:
        path: the file. A ``.npy`` file (magic ``\\x93NUMPY``) is read as ``np.load(allow_pickle=True)``
            would, so ``np.save`` of a dict comes back as a 0-d object array (``[()]`` gives the dict).
        allowed: ``"module.name" -> object`` for the globals the file may name (default
            :data:`FLAME_ALLOWED_GLOBALS`).
        allow_chumpy: map chumpy classes to :class:`ChumpyStandIn`.

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file names a global outside the allowlist (message names it and the file),
            or is no readable pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    allowed = FLAME_ALLOWED_GLOBALS if allowed is None else allowed
    with open(path, "rb") as fh:
        data = fh.read()
    stream = io.BytesIO(data)
    if data.startswith(NPY_MAGIC):
        _skip_npy_header(stream, path)
    try:
        return RestrictedUnpickler(stream, allowed, allow_chumpy).load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f"{path}: {err}") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err


def to_numpy(value: object) -> np.ndarray:
    """A loaded value as a numpy array (chumpy stand-ins give their ``x``)."""
    if isinstance(value, ChumpyStandIn):
        return value.to_numpy()
    if isinstance(value, UndecodedTorchTensor):
        raise ValueError("a torch tensor inside the pickle was not decoded (only numpy arrays are read)")
    return np.asarray(value)
