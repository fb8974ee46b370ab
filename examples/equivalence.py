"""A convolutional network and its fully connected equivalent are the same network.

Each convolutional layer is a fully connected layer whose (K*Ho*Wo) x (C*H*W)
weight matrix is sparse and shares its values: ``fastconv.conv_matrix`` builds
it. This script trains, on scikit-learn's 8x8 digits (real scans, shipped
offline), three networks from the same initial weights with the same
minibatches and plain NumPy gradient descent:

* **conv**: two convolutional layers (fastconv.conv2d forward;
  fastconv.conv2d_weight_grad and conv2d_input_grad backward) and a linear
  classifier;
* **dense, shared**: the same network with each convolution replaced by the
  dense matrix ``conv_matrix(w)`` and trained as a dense layer (``h = W @ x``,
  ``dW = dh @ x.T`` in NumPy), except that entries holding the same kernel
  weight share it: their gradients are summed and applied to all of them
  (which is what weight sharing means), and entries that are zero stay zero;
* **dense, free**: the same dense matrices trained with no sharing.

The first two produce the same loss at every step (to rounding), and the
kernels read back out of the trained dense matrices are the conv net's
kernels: the convolution *is* that fully connected layer. The third shows
what the structure buys: it has 50x more free weights, loses the
convolutional structure in its first step, and learns a different function.

    python examples/equivalence.py [--epochs 15] [--out equivalence.png]

Needs the ``examples`` extra (scikit-learn, matplotlib):
``python3 -m pip install ".[examples]"``.
"""
import argparse

import numpy as np

import fastconv

# conv1: 1 -> 8 channels, 3x3, padding 1 (8x8 -> 8x8)
# conv2: 8 -> 16 channels, 3x3, stride 2, padding 1 (8x8 -> 4x4)
CONV1 = dict(stride=1, padding=1)
CONV2 = dict(stride=2, padding=1)


def load_digits_split(seed):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = digits.images[:, None, :, :] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], digits.target[order]
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def init_params(seed):
    rng = np.random.default_rng(seed)
    return dict(w1=rng.standard_normal((8, 1, 3, 3)) * np.sqrt(2 / 9), b1=np.zeros(8),
                w2=rng.standard_normal((16, 8, 3, 3)) * np.sqrt(2 / 72), b2=np.zeros(16),
                v=rng.standard_normal((16 * 4 * 4, 10)) * np.sqrt(1 / 256), c=np.zeros(10))


def softmax_loss(logits, labels):
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    p[np.arange(n), labels] -= 1
    return loss, p / n


# -- the convolutional network, through fastconv --------------------------------

def conv_forward(p, x):
    h1 = fastconv.conv2d(x, p["w1"], p["b1"], **CONV1)
    a1 = np.maximum(h1, 0)
    h2 = fastconv.conv2d(a1, p["w2"], p["b2"], **CONV2)
    a2 = np.maximum(h2, 0)
    return dict(x=x, h1=h1, a1=a1, h2=h2, a2=a2, logits=a2.reshape(len(x), -1) @ p["v"] + p["c"])


def conv_step(p, x, labels, lr):
    f = conv_forward(p, x)
    loss, d_logits = softmax_loss(f["logits"], labels)
    d_a2 = (d_logits @ p["v"].T).reshape(f["a2"].shape)
    d_h2 = d_a2 * (f["h2"] > 0)
    d_a1 = fastconv.conv2d_input_grad(f["a1"].shape, p["w2"], d_h2, **CONV2)
    d_h1 = d_a1 * (f["h1"] > 0)
    grads = dict(v=f["a2"].reshape(len(x), -1).T @ d_logits, c=d_logits.sum(0),
                 w2=fastconv.conv2d_weight_grad(f["a1"], p["w2"].shape, d_h2, **CONV2),
                 b2=d_h2.sum(axis=(0, 2, 3)),  # the bias gradient is a sum
                 w1=fastconv.conv2d_weight_grad(x, p["w1"].shape, d_h1, **CONV1),
                 b1=d_h1.sum(axis=(0, 2, 3)))
    for name, g in grads.items():
        p[name] -= lr * g
    return loss


# -- the fully connected equivalent, in plain NumPy ------------------------------

class DenseLayer:
    """``conv_matrix(w)`` as a dense layer, and which kernel weight (if any)
    each of its entries holds: the conv matrix of the weight *numbers*
    1..w.size (0 where the matrix is structurally zero)."""

    def __init__(self, w, b, input_shape, conv, shared):
        self.kernel_shape, self.shared = w.shape, shared
        self.W = fastconv.conv_matrix(w, input_shape, **conv)
        numbers = np.arange(1, w.size + 1, dtype=np.float64).reshape(w.shape)
        self.index = fastconv.conv_matrix(numbers, input_shape, **conv).astype(np.int64) - 1
        self.positions = self.W.shape[0] // w.shape[0]  # Ho*Wo outputs per filter
        self.bias = np.repeat(b, self.positions)        # one bias per (filter, position)
        self.tied = self.index >= 0

    def forward(self, x_flat):
        return x_flat @ self.W.T + self.bias

    def update(self, x_flat, d_h, lr):
        d_W = d_h.T @ x_flat           # the dense layer's gradient, every entry
        d_bias = d_h.sum(0)
        d_x = d_h @ self.W
        if self.shared:
            # entries holding one kernel weight share it: sum their gradients
            d_kernel = np.bincount(self.index[self.tied], weights=d_W[self.tied],
                                   minlength=int(np.prod(self.kernel_shape)))
            self.W[self.tied] -= lr * d_kernel[self.index[self.tied]]
            filters = len(self.bias) // self.positions
            self.bias -= lr * np.repeat(d_bias.reshape(filters, -1).sum(1), self.positions)
        else:
            self.W -= lr * d_W
            self.bias -= lr * d_bias
        return d_x

    def kernel(self):
        """The kernel read back out of the matrix: the mean of the entries
        holding each weight, and how far those entries are from each other
        and how much of the matrix lies outside the convolution's pattern."""
        n = int(np.prod(self.kernel_shape))
        values = self.W[self.tied]
        index = self.index[self.tied]
        mean = np.bincount(index, weights=values, minlength=n) / np.bincount(index, minlength=n)
        spread = np.abs(values - mean[index]).max()
        outside = np.abs(self.W[~self.tied]).max(initial=0.0)
        return mean.reshape(self.kernel_shape), spread, outside


class DenseNet:
    def __init__(self, p, shared):
        self.l1 = DenseLayer(p["w1"], p["b1"], (1, 8, 8), CONV1, shared)
        self.l2 = DenseLayer(p["w2"], p["b2"], (8, 8, 8), CONV2, shared)
        self.v, self.c = p["v"].copy(), p["c"].copy()

    def forward(self, x):
        x_flat = x.reshape(len(x), -1)
        h1 = self.l1.forward(x_flat)
        a1 = np.maximum(h1, 0)
        h2 = self.l2.forward(a1)
        a2 = np.maximum(h2, 0)
        return dict(x=x_flat, h1=h1, a1=a1, h2=h2, a2=a2, logits=a2 @ self.v + self.c)

    def step(self, x, labels, lr):
        f = self.forward(x)
        loss, d_logits = softmax_loss(f["logits"], labels)
        d_h2 = (d_logits @ self.v.T) * (f["h2"] > 0)
        self.v -= lr * f["a2"].T @ d_logits
        self.c -= lr * d_logits.sum(0)
        d_h1 = self.l2.update(f["a1"], d_h2, lr) * (f["h1"] > 0)
        self.l1.update(f["x"], d_h1, lr)
        return loss


def accuracy(logits, labels):
    return float((logits.argmax(1) == labels).mean())


def train(epochs=15, batch=50, lr=0.1, seed=0, log=print):
    """Train the three networks side by side; return their loss curves (one
    value per step), the networks, and the held-out digits."""
    (x, y), test = load_digits_split(seed)
    conv = init_params(seed)
    shared, free = DenseNet(conv, shared=True), DenseNet(conv, shared=False)
    log(f"conv layers: {conv['w1'].size} + {conv['w2'].size} weights; as dense matrices "
        f"{shared.l1.W.shape} + {shared.l2.W.shape} = {shared.l1.W.size + shared.l2.W.size} "
        f"entries ({shared.l1.tied.sum() + shared.l2.tied.sum()} structurally nonzero)")
    rng = np.random.default_rng(seed + 1)
    curves = {"conv (fastconv)": [], "dense, shared weights": [], "dense, free weights": []}
    for epoch in range(epochs):
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            curves["conv (fastconv)"].append(conv_step(conv, xb, yb, lr))
            curves["dense, shared weights"].append(shared.step(xb, yb, lr))
            curves["dense, free weights"].append(free.step(xb, yb, lr))
        order = rng.permutation(len(x))  # the same minibatches for all three
        x, y = x[order], y[order]
        steps = -(-len(x) // batch)
        log(f"epoch {epoch + 1:3d}, mean loss: " + ", ".join(
            f"{name} {np.mean(c[-steps:]):.4f}" for name, c in curves.items()))
    return dict(curves={k: np.array(v) for k, v in curves.items()}, conv=conv, shared=shared,
                free=free, test=test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="equivalence.png", help="PNG of the loss curves")
    args = parser.parse_args()

    result = train(args.epochs, args.batch, args.lr, args.seed)
    curves, conv, shared, free = (result[k] for k in ("curves", "conv", "shared", "free"))
    x_test, y_test = result["test"]
    loss_conv = curves["conv (fastconv)"]
    loss_shared = curves["dense, shared weights"]
    largest = float(np.abs(loss_conv - loss_shared).max())
    print(f"\nlargest difference between the conv and shared-dense losses over "
          f"{len(loss_conv)} steps: {largest:.2e}")
    for name, layer, w in (("conv1", shared.l1, conv["w1"]), ("conv2", shared.l2, conv["w2"])):
        kernel, spread, outside = layer.kernel()
        print(f"{name}: kernel read back from the trained dense matrix vs the conv net's: "
              f"{np.abs(kernel - w).max():.2e}; entries sharing a weight differ by {spread:.1e}; "
              f"largest entry off the conv pattern {outside:.1e}")
        _, spread, outside = getattr(free, "l" + name[-1]).kernel()
        print(f"{name}, free dense layer: entries meant to share a weight now differ by "
              f"{spread:.2f}; largest entry off the pattern {outside:.2f}")
    print("test accuracy: " + ", ".join(
        f"{name} {accuracy(net_logits, y_test):.3f}" for name, net_logits in (
            ("conv", conv_forward(conv, x_test)["logits"]),
            ("dense shared", shared.forward(x_test)["logits"]),
            ("dense free", free.forward(x_test)["logits"]))))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, len(loss_conv) + 1)
    ax.plot(steps, curves["dense, free weights"], color="tab:gray", lw=1, alpha=0.8,
            label="dense, free weights")
    ax.plot(steps, loss_shared, color="tab:orange", lw=3, label="dense = conv_matrix(w), shared weights")
    ax.plot(steps, loss_conv, color="tab:blue", lw=1, ls="--", label="conv (fastconv gradients)")
    ax.set(xlabel="gradient step (minibatch of %d digits)" % args.batch, ylabel="training loss",
           yscale="log", title=f"8x8 digits: conv and dense losses differ by at most {largest:.1e}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
