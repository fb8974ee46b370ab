"""Normalising and validating convolution arguments; output shapes; dtypes.

Everything the kernels assume is established here, so that a wrong argument
becomes a ValueError/TypeError naming the argument and the shapes, never a
crash or a wrong answer inside a kernel.
"""
from dataclasses import dataclass
import functools
import operator

import numpy as np

_PADDING_STRINGS = ("valid", "same", "full")
# What the padding reads, in the order of the kernels' codes (PAD_ZEROS, ...
# in fastconv/_kernels/_index_map.pxd). PyTorch's four names, plus NumPy's
# "symmetric" (SciPy's boundary="symm").
PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")
# the names other libraries use, for the error message
_PADDING_MODE_ALIASES = {"constant": "zeros", "fill": "zeros", "edge": "replicate",
                         "nearest": "replicate", "wrap": "circular", "symm": "symmetric",
                         "mirror": "reflect"}
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution, fully resolved: every size the kernels need.

    1-D convolutions are the 2-D case with H = R = 1 (``spatial_dims`` = 1
    keeps the user's view for messages and output shapes).
    """
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    groups: int
    stride: tuple       # (sh, sw)
    padding: tuple      # ((top, bottom), (left, right))
    dilation: tuple     # (dh, dw)
    Ho: int
    Wo: int
    spatial_dims: int = 2
    padding_mode: str = "zeros"   # one of PADDING_MODES; "zeros" when nothing is padded

    @property
    def rows(self):
        """Rows of the stretched matrix of one group: C/groups * R * S."""
        return self.C // self.groups * self.R * self.S

    @property
    def cols(self):
        """Columns of the stretched matrix of one image: Ho * Wo."""
        return self.Ho * self.Wo

    @property
    def spans(self):
        """(dh*(R-1), dw*(S-1)): how far the dilated kernel reaches past its
        first tap along each axis."""
        return (self.dilation[0] * (self.R - 1), self.dilation[1] * (self.S - 1))

    @property
    def output_shape(self):
        if self.spatial_dims == 1:
            return (self.N, self.K, self.Wo)
        return (self.N, self.K, self.Ho, self.Wo)

    @property
    def flops(self):
        """Multiply-adds counted as 2 FLOPs: 2 * N * K * Ho*Wo * C/groups*R*S."""
        return 2 * self.N * self.K * self.cols * self.rows

    @property
    def kernel_args(self):
        """(R, S, Wo, sh, sw, pad_top, pad_left, dh, dw): what every kernel's
        index map is built from, in the kernels' argument order."""
        (pad_top, _), (pad_left, _) = self.padding
        return (self.R, self.S, self.Wo, *self.stride, pad_top, pad_left, *self.dilation)

    def index_args(self, flip=False):
        """kernel_args + (groups, flip, padding mode code): the index map of
        every kernel (fastconv/_kernels/_index_map.pxd, init_index_map)."""
        return (*self.kernel_args, self.groups, bool(flip), PADDING_MODES.index(self.padding_mode))

    @property
    def is_pointwise(self):
        """1x1, stride 1, no padding: the input already is the stretched matrix."""
        # (the output of a transposed convolution with output_padding has a
        # row or column more than the image it comes from: not pointwise)
        return (self.R == 1 and self.S == 1 and self.stride == (1, 1)
                and self.padding == ((0, 0), (0, 0)) and (self.Ho, self.Wo) == (self.H, self.W))


def summarize(value, limit=80):
    """A short description of value for an error message: a small value's
    repr, but never a whole array ("ndarray of shape (8, 1, 28, 28)")."""
    if isinstance(value, np.ndarray):
        if value.ndim <= 1 and value.size <= 8:
            return repr(value)
        return f"ndarray of shape {value.shape} (dtype {value.dtype})"
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return f"the string {text}" if len(text) <= limit else f"a string of length {len(value)}"
    text = repr(value)
    if len(text) <= limit:
        return text
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(value, (list, tuple)):
        try:
            shape = np.shape(value)
        except (ValueError, TypeError):
            shape = None
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return f"{type(value).__name__} {text[:limit - 20]}..."


def _as_int(value, name):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be given as ints, got {summarize(value)} ({type(value).__name__})")
    return operator.index(value)


def int_tuple(value, name, n, minimum):
    """An int or a sequence of n ints, each >= minimum, as an n-tuple."""
    if hasattr(value, "__index__") and not isinstance(value, bool):
        values = (operator.index(value),) * n
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == n:
        values = tuple(_as_int(v, name) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {summarize(value)}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum}, got {summarize(value)}")
    return values


def padding_pairs(padding, n, kernel, dilation, stride, flip=False):
    """Normalise ``padding`` to n (before, after) pairs, one per spatial axis.

    Accepts an int; n ints (symmetric per axis); n (before, after) pairs; for
    1-D also a bare (before, after) pair; or "valid", "same", "full".

    "same" with an odd total puts the extra element after (bottom/right) for
    cross-correlation, as PyTorch and ``scipy.signal.correlate2d``, and
    before (top/left) with ``flip`` (mathematical convolution), as
    ``scipy.signal.convolve2d`` and ``np.convolve``: the reversed kernel's
    centre is the mirror image of the unreversed one's.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in _PADDING_STRINGS:
            raise ValueError(f"padding={padding if len(padding) <= 40 else padding[:37] + '...'!r} is not one of "
                             f"{_PADDING_STRINGS}")
        spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if mode == "valid":
            return tuple((0, 0) for _ in range(n))
        if mode == "full":
            return tuple((s, s) for s in spans)
        if any(s != 1 for s in stride):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        if flip:  # mirror image: the extra element before (top/left), as scipy's convolve
            return tuple((s - s // 2, s // 2) for s in spans)
        # an odd total puts the extra element after (bottom/right), as PyTorch
        return tuple((s // 2, s - s // 2) for s in spans)
    if hasattr(padding, "__index__") and not isinstance(padding, bool):
        pairs = ((operator.index(padding),) * 2,) * n
    elif isinstance(padding, (tuple, list, np.ndarray)):
        items = list(padding)
        if n == 1 and len(items) == 2 and all(np.ndim(v) == 0 for v in items):
            items = [tuple(items)]
        if len(items) != n:
            raise ValueError(
                f"padding={summarize(padding)} must have one entry per spatial axis ({n}), "
                "each an int or a (before, after) pair")
        pairs = []
        for item in items:
            if np.ndim(item) == 0:
                p = _as_int(item, "padding")
                pairs.append((p, p))
            elif len(item) == 2:
                pairs.append(tuple(_as_int(v, "padding") for v in item))
            else:
                raise ValueError(f"padding={summarize(padding)}: each entry is an int or a "
                                 "(before, after) pair")
        pairs = tuple(pairs)
    else:
        raise TypeError(f"padding must be an int, a sequence, or one of {_PADDING_STRINGS}, "
                        f"got {summarize(padding)}")
    if any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"padding must be >= 0, got {summarize(padding)}")
    return tuple(pairs)


def padding_mode_name(padding_mode):
    """The padding mode, validated: one of PADDING_MODES."""
    if not isinstance(padding_mode, str):
        raise ValueError(f"padding_mode={summarize(padding_mode)} is not one of {PADDING_MODES}")
    if padding_mode in PADDING_MODES:
        return padding_mode
    lower, hint = padding_mode.lower(), ""
    if lower in _PADDING_MODE_ALIASES:
        hint = f" (for {padding_mode!r} write {_PADDING_MODE_ALIASES[lower]!r})"
    elif lower in PADDING_MODES:
        hint = f" (write {lower!r})"
    shown = repr(padding_mode) if len(padding_mode) <= 40 else summarize(padding_mode)
    raise ValueError(f"padding_mode={shown} is not one of {PADDING_MODES}{hint}")


def _plain(value):
    """Whether value is made only of Python ints and strings (tuples of
    them), so that equal values mean equal arguments: a safe cache key
    (bool, NumPy scalars, floats and lists are left to the uncached path,
    which validates them)."""
    kind = type(value)
    if kind is int or kind is str:
        return True
    if kind is not tuple:
        return False
    # leaves checked here, not by a call each: a layer's arguments hold ~20
    # of them, checked on every call (1.2 us recursing into each, 0.5 so)
    for item in value:
        kind = type(item)
        if kind is not int and kind is not str and not (kind is tuple and _plain(item)):
            return False
    return True


def conv_geometry(x_shape, weight_shape, *, stride, padding, dilation, groups,
                  spatial_dims=2, flip=False, padding_mode="zeros"):
    """Validate shapes and parameters of a convolution; return its geometry.

    x_shape is (N, C, *spatial), weight_shape (K, C/groups, *kernel); flip
    (mathematical convolution) places the odd element of padding="same";
    padding_mode says what the padding reads (PADDING_MODES).

    Remembered for plain arguments (a loop calling the same layer validates
    it once: about 8 us a call otherwise); errors are raised every time.
    """
    args = (x_shape, weight_shape, stride, padding, dilation, groups, spatial_dims,
            padding_mode)
    if _plain(args):
        return _cached_geometry(*args, bool(flip))
    return _conv_geometry(*args, flip)


@functools.lru_cache(maxsize=256)
def _cached_geometry(*args):
    return _conv_geometry(*args)


def _conv_geometry(x_shape, weight_shape, stride, padding, dilation, groups, spatial_dims,
                   padding_mode, flip):
    padding_mode = padding_mode_name(padding_mode)
    n = spatial_dims
    x_shape = tuple(int(s) for s in x_shape)
    weight_shape = tuple(int(s) for s in weight_shape)
    layout = "(N, C, L)" if n == 1 else "(N, C, H, W)"
    wlayout = "(K, C/groups, S)" if n == 1 else "(K, C/groups, R, S)"
    if len(x_shape) != n + 2:
        raise ValueError(f"x must be {n + 2}-D {layout}, got shape {x_shape}")
    if len(weight_shape) != n + 2:
        raise ValueError(f"weight must be {n + 2}-D {wlayout}, got shape {weight_shape}")
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    N, C, *in_size = x_shape
    K, c_group, *kernel = weight_shape
    if C % groups:
        raise ValueError(f"x has {C} channels (shape {x_shape}), not divisible by groups={groups}")
    if K % groups:
        raise ValueError(f"weight has {K} filters (shape {weight_shape}), not divisible by groups={groups}")
    if c_group != C // groups:
        raise ValueError(
            f"weight.shape[1] must be C/groups = {C}/{groups} = {C // groups} for x of shape "
            f"{x_shape}, got weight of shape {weight_shape}")
    stride = int_tuple(stride, "stride", n, 1)
    dilation = int_tuple(dilation, "dilation", n, 1)
    pads = padding_pairs(padding, n, kernel, dilation, stride, flip=flip)
    out_size = []
    for axis, (size, k, s, d, (lo, hi)) in enumerate(zip(in_size, kernel, stride, dilation, pads)):
        span = d * (k - 1) + 1
        if k < 1:
            raise ValueError(f"weight has an empty kernel (shape {weight_shape})")
        if size + lo + hi < span:
            raise ValueError(
                f"kernel larger than the padded input: x of shape {x_shape} padded to "
                f"{size + lo + hi} along spatial axis {axis}, but the kernel (shape {weight_shape}, "
                f"dilation {d}) spans {span}")
        out_size.append((size + lo + hi - span) // s + 1)
    if not any(p for pair in pads for p in pair):
        padding_mode = "zeros"  # nothing padded: every lowering applies
    if n == 1:
        in_size, kernel, out_size = [1] + in_size, [1] + kernel, [1] + out_size
        stride, dilation, pads = (1,) + stride, (1,) + dilation, ((0, 0),) + pads
    geometry = ConvGeometry(N=N, C=C, H=in_size[0], W=in_size[1], K=K, R=kernel[0],
                            S=kernel[1], groups=groups, stride=stride, padding=pads,
                            dilation=dilation, Ho=out_size[0], Wo=out_size[1],
                            spatial_dims=n, padding_mode=padding_mode)
    # BLAS takes 32-bit sizes; refuse what would not fit instead of overflowing.
    if max(geometry.cols, geometry.rows, K) > _INT32_MAX:
        raise ValueError(
            f"convolution too large for 32-bit BLAS: x {x_shape}, weight {weight_shape} "
            f"gives a {geometry.rows} x {geometry.cols} stretched matrix")
    return geometry


def as_array(value, name):
    """np.asarray with the argument named in the error; a string is refused
    (NumPy would make a 0-d array of it)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array, got {summarize(value)}")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} cannot be converted to a numeric array: {exc}") from None


def _computable(dtype, name, shape):
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype.kind == "f":
        return dtype
    raise TypeError(
        f"{name} has dtype {dtype} (shape {shape}); fastconv computes in float32/float64 "
        "and converts integer and bool inputs to float64")


# float32 and float64 in native byte order (NumPy's one instance of each)
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def resolve_dtypes(**arrays):
    """(compute dtype, result dtype) of the named arrays (None entries ignored).

    Integer and bool inputs count as float64; the result dtype is their
    np.result_type; float16 is computed in float32 and longdouble in float64.
    """
    # the everyday call (every array float32, or every one float64): 0.3 us,
    # not the 1.8 of the general rule
    common = None
    for a in arrays.values():
        if a is not None:
            if common is None:
                common = a.dtype
            elif a.dtype is not common:
                common = False
                break
    if common is _NATIVE_FLOATS[0] or common is _NATIVE_FLOATS[1]:
        return common, common
    dtypes = [_computable(a.dtype, name, a.shape) for name, a in arrays.items() if a is not None]
    result = np.result_type(*dtypes)
    compute = np.dtype(np.float32) if result.itemsize <= 4 else np.dtype(np.float64)
    return compute, result


def kernel_input(x, dtype):
    """x as the kernels can read it: the given native dtype, aligned, strides a
    whole number of elements. Any layout that already satisfies this is passed
    through without a copy (the kernels take arbitrary strides, including
    negative and zero ones); anything else is copied once, C-contiguous."""
    if x.dtype == dtype and x.dtype.isnative and x.flags.aligned:
        # (C-contiguous: every stride a whole number of elements, without
        # the generator's 0.4 us a call)
        if x.flags.c_contiguous or all(s % dtype.itemsize == 0 for s in x.strides):
            return x
    return np.ascontiguousarray(x, dtype=dtype)


def check_bias(bias, channels, meaning):
    """bias, checked to hold one value per output channel; `meaning` says
    where that count comes from, for the message."""
    if bias is None:
        return None
    if bias.ndim != 1 or bias.shape[0] != channels:
        raise ValueError(f"bias must have shape ({channels},), one value per {meaning}, "
                         f"got shape {bias.shape}")
    return bias


def shape_like(shape, name, array_name=None):
    """A user-given shape as a tuple of ints (any length), refusing with a
    TypeError an array (or a string) passed where its shape belongs."""
    if type(shape) is tuple:
        # the everyday case, a tuple of Python ints (an array's .shape):
        # 0.2 us, not the general path's 1
        for d in shape:
            if type(d) is not int:
                break
        else:
            return shape
    hint = f"; pass {array_name}.shape" if array_name else ""
    if isinstance(shape, (str, bytes)):
        raise TypeError(f"{name} must be a shape tuple, got {summarize(shape)}")
    if isinstance(shape, np.ndarray) and (shape.ndim != 1 or shape.dtype.kind not in "iu"):
        raise TypeError(f"{name} must be a shape tuple, got {summarize(shape)}{hint}")
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a shape tuple, got {summarize(shape)}") from None
    if not all(hasattr(d, "__index__") and not isinstance(d, bool) for d in dims):
        if any(np.ndim(d) > 0 for d in dims):  # nested sequences: an array's values
            raise TypeError(f"{name} must be a shape tuple, got {summarize(shape)}{hint}")
        raise TypeError(f"{name} must be a shape tuple of ints, got {summarize(shape)}")
    return tuple(int(d) for d in dims)


def shape_tuple(shape, name, ndim, array_name=None, layout=""):
    """A user-given shape: ndim non-negative ints."""
    dims = shape_like(shape, name, array_name)
    if len(dims) != ndim:
        raise ValueError(f"{name} must be a tuple of {ndim} ints{layout}, got {summarize(shape)}")
    if min(dims, default=0) < 0:
        raise ValueError(f"{name} must not have negative sizes, got {dims}")
    return dims
