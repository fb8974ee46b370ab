"""An independent NumPy reference for convolution, written for clarity, not speed.

It shares no code with fastconv: padding is an explicit np.pad, windows come
from sliding_window_view, and the sum over (channel, kernel row, kernel column)
is one einsum per group, in float64.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# fastconv's padding modes in np.pad's names
NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                "circular": "wrap", "symmetric": "symmetric"}


def pad_reference(x, padding, padding_mode="zeros"):
    """x (N, C, H, W) padded by np.pad, ((top, bottom), (left, right))."""
    return np.pad(x, ((0, 0), (0, 0), tuple(padding[0]), tuple(padding[1])),
                  mode=NP_PAD_MODES[padding_mode])


def pad_adjoint_reference(padded, input_shape, padding, padding_mode="zeros"):
    """The transpose of pad_reference: every element of `padded` added into
    the input element np.pad copied it from (zeros: the padding dropped)."""
    N, C, H, W = input_shape
    (pt, _), (pl, _) = padding
    if padding_mode == "zeros":
        return padded[:, :, pt:pt + H, pl:pl + W]
    source = pad_reference(np.arange(H * W).reshape(1, 1, H, W), padding, padding_mode)[0, 0]
    out = np.zeros((N, C, H * W))
    np.add.at(out, (slice(None), slice(None), source.ravel()), padded.reshape(N, C, -1))
    return out.reshape(input_shape)


def conv2d_reference(x, weight, bias=None, *, stride=(1, 1),
                     padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, flip=False,
                     padding_mode="zeros"):
    """Cross-correlation of x (N, C, H, W) with weight (K, C/groups, R, S).

    padding is explicit ((top, bottom), (left, right)), filled as np.pad
    does for padding_mode; the result is float64.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if flip:
        weight = weight[:, :, ::-1, ::-1]
    N, C, H, W = x.shape
    K, Cg, R, S = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    padded = pad_reference(x, padding, padding_mode)
    span_h, span_w = dh * (R - 1) + 1, dw * (S - 1) + 1
    # windows[n, c, i, j, a, b] = padded[n, c, i + a, j + b]
    windows = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # stride, then dilation inside the window
    Kg = K // groups
    out = np.empty((N, K) + windows.shape[2:4])
    for g in range(groups):
        out[:, g * Kg:(g + 1) * Kg] = np.einsum(
            "nchwrs,kcrs->nkhw", windows[:, g * Cg:(g + 1) * Cg], weight[g * Kg:(g + 1) * Kg])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


def conv1d_reference(x, weight, bias=None, *, stride=1, padding=(0, 0), dilation=1,
                     groups=1, flip=False, padding_mode="zeros"):
    """1-D cross-correlation via the 2-D reference on a height-1 image."""
    out = conv2d_reference(np.asarray(x)[:, :, None, :], np.asarray(weight)[:, :, None, :],
                           bias, stride=(1, stride), padding=((0, 0), padding),
                           dilation=(1, dilation), groups=groups, flip=flip,
                           padding_mode=padding_mode)
    return out[:, :, 0, :]


def assert_close(actual, expected, dtype):
    """float64: 1e-10 relative; float32: 1e-4 relative, both scaled by the
    magnitude of the result so that entries near zero are judged fairly."""
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-4
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=rtol * scale)


def im2col_reference(x, kernel_size, *, stride=(1, 1), padding=((0, 0), (0, 0)),
                     dilation=(1, 1)):
    """(N, C*R*S, Ho*Wo) by explicit loops over the kernel taps (float64)."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    R, S = kernel_size
    (sh, sw), (dh, dw) = stride, dilation
    padded = np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]))
    Ho = (padded.shape[2] - dh * (R - 1) - 1) // sh + 1
    Wo = (padded.shape[3] - dw * (S - 1) - 1) // sw + 1
    cols = np.empty((N, C, R, S, Ho, Wo))
    for r in range(R):
        for s in range(S):
            cols[:, :, r, s] = padded[:, :, r * dh:r * dh + sh * (Ho - 1) + 1:sh,
                                      s * dw:s * dw + sw * (Wo - 1) + 1:sw]
    return cols.reshape(N, C * R * S, Ho * Wo)


def conv_matrix_reference(weight, input_shape, **conv):
    """The matrix of the reference convolution, column by column: the image
    of each unit input (float64; only for small shapes)."""
    C, H, W = input_shape
    columns = []
    for i in range(C * H * W):
        unit = np.zeros(C * H * W)
        unit[i] = 1.0
        columns.append(conv2d_reference(unit.reshape(1, C, H, W), weight, **conv).ravel())
    return np.stack(columns, axis=1)


def _strided_taps(R, S, stride, dilation, out_hw):
    """Slices of the padded input that kernel tap (r, s) meets at every output position."""
    (sh, sw), (dh, dw), (Ho, Wo) = stride, dilation, out_hw
    for r in range(R):
        for s in range(S):
            yield r, s, (slice(r * dh, r * dh + sh * (Ho - 1) + 1, sh),
                         slice(s * dw, s * dw + sw * (Wo - 1) + 1, sw))


def conv2d_input_grad_reference(input_shape, weight, grad_output, *, stride=(1, 1),
                                padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, flip=False,
                                padding_mode="zeros"):
    """d<conv2d(x, weight), grad_output>/dx by scattering every tap's
    contribution into a padded zero image, then cutting the padding (or,
    for another padding mode, adding it back where np.pad copied it from)
    (float64)."""
    weight = np.asarray(weight, dtype=np.float64)
    if flip:
        weight = weight[:, :, ::-1, ::-1]
    grad = np.asarray(grad_output, dtype=np.float64)
    N, C, H, W = input_shape
    K, Cg, R, S = weight.shape
    Kg = K // groups
    (pt, pb), (pl, pr) = padding
    padded = np.zeros((N, C, H + pt + pb, W + pl + pr))
    for r, s, (rows, cols) in _strided_taps(R, S, stride, dilation, grad.shape[2:]):
        for g in range(groups):
            padded[:, g * Cg:(g + 1) * Cg, rows, cols] += np.einsum(
                "nkhw,kc->nchw", grad[:, g * Kg:(g + 1) * Kg], weight[g * Kg:(g + 1) * Kg, :, r, s])
    return pad_adjoint_reference(padded, input_shape, padding, padding_mode)


def conv2d_weight_grad_reference(x, weight_shape, grad_output, *, stride=(1, 1),
                                 padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, flip=False,
                                 padding_mode="zeros"):
    """d<conv2d(x, weight), grad_output>/dweight, one kernel tap at a time (float64)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.asarray(grad_output, dtype=np.float64)
    K, Cg, R, S = weight_shape
    Kg = K // groups
    padded = pad_reference(x, padding, padding_mode)
    out = np.zeros(weight_shape)
    for r, s, (rows, cols) in _strided_taps(R, S, stride, dilation, grad.shape[2:]):
        for g in range(groups):
            out[g * Kg:(g + 1) * Kg, :, r, s] = np.einsum(
                "nkhw,nchw->kc", grad[:, g * Kg:(g + 1) * Kg], padded[:, g * Cg:(g + 1) * Cg, rows, cols])
    return out[:, :, ::-1, ::-1] if flip else out


def conv_transpose2d_reference(x, weight, bias=None, *, stride=(1, 1), padding=((0, 0), (0, 0)),
                               output_padding=(0, 0), dilation=(1, 1), groups=1):
    """PyTorch's transposed convolution, from its definition: every input pixel
    adds weight[c] * x[n, c, h, w] at (h*stride, w*stride) of a full-size
    output, whose borders (padding) are then cut (float64)."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, C_in, H, W = x.shape
    _, Cog, R, S = weight.shape
    Cig = C_in // groups
    (sh, sw), (dh, dw), (oph, opw) = stride, dilation, output_padding
    full = np.zeros((N, Cog * groups, (H - 1) * sh + dh * (R - 1) + 1 + oph,
                     (W - 1) * sw + dw * (S - 1) + 1 + opw))
    for r, s, (rows, cols) in _strided_taps(R, S, stride, dilation, (H, W)):
        for g in range(groups):
            full[:, g * Cog:(g + 1) * Cog, rows, cols] += np.einsum(
                "nchw,co->nohw", x[:, g * Cig:(g + 1) * Cig], weight[g * Cig:(g + 1) * Cig, :, r, s])
    (pt, pb), (pl, pr) = padding
    out = full[:, :, pt:full.shape[2] - pb, pl:full.shape[3] - pr]
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out
