#!/usr/bin/env python3
"""The seed tutorial's 3D U-Net in PyTorch eager on the CPU: what segtop is measured against.

Training (default): one step is NAdam (lr 1e-3) on batch B of 4-channel P^3 random patches,
soft Dice (mean over 4 classes) + cross-entropy, gradient-norm clipping at 1.0, as
`segtop-train bench experiments/seed-tutorial.toml` does (whose loss is Dice + focal, a
few elementwise passes like these). Five levels of two 3x3x3 convolutions +
ReLU (16 to 256 filters), dropout 0.1/0.1/0.2/0.2/0.3 after the first convolution of each
block, 2x2x2 max-pool, 2x2x2 transposed convolution up, skip concatenation, 1x1x1 convolution
to 4 classes: 5,646,260 parameters.

--net default: the default experiment's network instead: 16 to 256 filters, instance norm
(affine) after each convolution, leaky ReLU (slope 0.01), no dropout; AdamW (lr 1e-3, weight
decay 1e-4) as segtop's default. --net lite (or --lite): experiments/lite.toml's, the same with
8 to 128 filters: 1,413,916 parameters. The options follow the shared reference script
(pytorch_seed_unet.py), so bench/compare.sh can run either (REFERENCE=...).

--infer: sliding-window inference over one random case, as segtop validates: windows of W^3
with the given overlap, the last window flush with the end of each axis, softmax
probabilities weighted by a Gaussian (sigma = W/8, floored at 1e-3) and averaged, then argmax.
--window-batch N runs N windows through the network at once (default 1: the plain loop).

--bf16: torch.autocast("cpu", bfloat16) around the forward pass, the loss and the optimizer
on float32 (PyTorch's one-line mixed precision); fast where the CPU has AVX512-BF16 or AMX.

Prints one JSON line. Needs torch (CPU) and numpy; see the README's Benchmarks section.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FILTERS = (16, 32, 64, 128, 256)
DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)


def block(cin, cout, p, normed):
    if normed:
        return nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(inplace=True))
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(p),
        nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class SeedUNet(nn.Module):
    def __init__(self, channels=4, classes=4, net="seed"):
        super().__init__()
        filters = [f // 2 for f in FILTERS] if net == "lite" else FILTERS
        normed = net != "seed"
        self.down = nn.ModuleList()
        c = channels
        for f, p in zip(filters, DROPOUT):
            self.down.append(block(c, f, p, normed))
            c = f
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(filters[i], filters[i - 1], 2, stride=2) for i in range(len(filters) - 1, 0, -1))
        self.merge = nn.ModuleList(
            block(filters[i - 1] * 2, filters[i - 1], DROPOUT[i - 1], normed) for i in range(len(filters) - 1, 0, -1))
        self.head = nn.Conv3d(filters[0], classes, 1)

    def forward(self, x):
        skips = []
        for level, b in enumerate(self.down):
            x = b(x)
            if level < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool3d(x, 2)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


def dice_ce(logits, target, classes=4):
    probs = logits.softmax(1)
    onehot = F.one_hot(target, classes).permute(0, 4, 1, 2, 3).float()
    axes = (0, 2, 3, 4)
    overlap = (probs * onehot).sum(axes)
    total = probs.sum(axes) + onehot.sum(axes)
    dice = 1 - ((2 * overlap + 1e-5) / (total + 1e-5)).mean()
    return dice + F.cross_entropy(logits, target)


def forward_macs(model, patch):
    """Multiply-accumulates of one forward pass of a 4 x patch^3 input, from the layers' shapes."""
    macs = []

    def count(module, inputs, output):
        k = module.weight[0, 0].numel()
        if isinstance(module, nn.ConvTranspose3d):
            macs.append(inputs[0].numel() * module.out_channels * k)
        else:
            macs.append(output.numel() * module.in_channels * k)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        model(torch.zeros(1, 4, patch, patch, patch))
    for h in hooks:
        h.remove()
    return sum(macs)


def channels_last(t):
    return t.to(memory_format=torch.channels_last_3d)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(a, model):
    macs = forward_macs(model, a.patch)
    if a.net != "seed":
        opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-4)
    else:
        opt = torch.optim.NAdam(model.parameters(), 1e-3)
    x = torch.randn(a.batch, 4, a.patch, a.patch, a.patch)
    y = torch.randint(0, 4, (a.batch, a.patch, a.patch, a.patch))
    if a.channels_last:
        x = channels_last(x)
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(x)
        loss = dice_ce(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - start)
    counted = sorted(times[1:])
    median = counted[len(counted) // 2]
    # 6 FLOP per forward multiply-accumulate: the forward pass, and twice its work backward.
    gflop = 6 * macs * a.batch / 1e9
    return {"patch": [a.patch] * 3, "batch": a.batch, "steps": a.steps, "median_step_s": median,
            "patches_per_s": a.batch / median, "gflops": gflop / median, "peak_rss_mb": peak_rss_mb()}


def starts(size, window, overlap):
    if size <= window:
        return [0]
    stride = max(1, round(window * (1 - overlap)))
    out = list(range(0, size - window, stride))
    out.append(size - window)
    return out


def gaussian(window):
    axis = torch.arange(window, dtype=torch.float32)
    sigma, centre = window / 8, (window - 1) / 2
    g = torch.exp(-(axis - centre) ** 2 / (2 * sigma * sigma))
    w = g.view(-1, 1, 1) * g.view(1, -1, 1) * g.view(1, 1, -1)
    return (w / w.max()).clamp_min(1e-3)


@torch.inference_mode()
def infer(a, model):
    model.eval()
    x, y, z = a.case
    volume = torch.randn(1, 4, z, y, x)
    if a.channels_last:
        volume = channels_last(volume)
    w = a.window
    weights = (gaussian(w) if a.gaussian else torch.ones(w, w, w)).view(1, 1, w, w, w)
    shape = [max(n, w) for n in (z, y, x)]
    padded = torch.zeros(1, 4, *shape)
    padded[:, :, :z, :y, :x] = volume
    total = torch.zeros(1, 4, *shape)
    count = torch.zeros(1, 1, *shape)
    grid = [starts(n, w, a.overlap) for n in shape]
    corners = [(i, j, k) for i in grid[0] for j in grid[1] for k in grid[2]]
    start = time.perf_counter()
    for first in range(0, len(corners), a.window_batch):
        crops = [(slice(None), slice(None), slice(i, i + w), slice(j, j + w), slice(k, k + w))
                 for i, j, k in corners[first:first + a.window_batch]]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(torch.cat([padded[c] for c in crops]))
        probs = logits.float().softmax(1)
        for n, crop in enumerate(crops):
            total[crop] += probs[n:n + 1] * weights
            count[crop] += weights
    labels = (total / count)[:, :, :z, :y, :x].argmax(1)
    seconds = time.perf_counter() - start
    assert labels.numel() == x * y * z
    return {"case": [x, y, z], "window": [w] * 3, "overlap": a.overlap, "windows": len(corners),
            "window_batch": a.window_batch,
            "seconds": seconds, "voxels_per_s": x * y * z / seconds, "peak_rss_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    ap.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format")
    ap.add_argument("--infer", action="store_true", help="sliding-window inference instead of training")
    ap.add_argument("--net", choices=("seed", "default", "lite"), default="seed",
                    help="the seed tutorial's network, the default experiment's, or experiments/lite.toml's")
    ap.add_argument("--lite", action="store_true", help="the same as --net lite")
    ap.add_argument("--case", type=lambda v: [int(n) for n in v.split("x")], default=[240, 240, 155],
                    metavar="XxYxZ")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--gaussian", type=int, default=1, help="1: Gaussian window weights, 0: uniform")
    ap.add_argument("--window-batch", type=int, default=1, help="windows per forward pass")
    ap.add_argument("--bf16", action="store_true",
                    help="mixed precision: torch.autocast('cpu', bfloat16) around the forward pass "
                         "(float32 weights, optimizer and loss)")
    a = ap.parse_args()
    if a.lite:
        a.net = "lite"
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = SeedUNet(net=a.net)
    if a.channels_last:
        model = channels_last(model)
    result = infer(a, model) if a.infer else train(a, model)
    name = "pytorch-eager" + ("" if a.net == "seed" else f"-{a.net}") + ("-channels-last" if a.channels_last else "") + ("-bf16" if a.bf16 else "")
    if a.infer and a.window_batch > 1:
        name += f"-window-batch-{a.window_batch}"
    print(json.dumps({"impl": name, "params": sum(p.numel() for p in model.parameters()),
                      "threads": torch.get_num_threads(), **result}))


if __name__ == "__main__":
    main()
