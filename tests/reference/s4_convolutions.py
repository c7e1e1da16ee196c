"""Reference convolutions of the S4D kernel, for the tests and ``bench/model.py``.

``labecg.s4`` keeps one way to apply its kernel (the padded FFT with a hand-written
backward). The others live here, each an independent computation of the same convolution:
the step-by-step recurrence (:func:`run_recurrence`, slow), the same padded FFT with
autograd's backward (``fft_autograd``, as the S4D reference code writes it: the tests hold the
hand-written backward to it, ``bench/model.py`` times the two), the plain FFT convolution over
2L points (the authors' way) and the Toeplitz matrix product, both with hand-written backwards
that the tests check with ``gradcheck``. :func:`layer_forward` is :class:`labecg.s4.S4Layer`'s
block with any of them and the plain order of dropout (mask after GELU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labecg.s4 import S4Layer, _FFTConv, circular_kernel, fft_length, two_sided_kernel

METHODS = ("fft", "fft_autograd", "fft_plain", "toeplitz")


def layer_forward(layer: S4Layer, u: torch.Tensor, method: str) -> torch.Tensor:
    """``layer(u)`` with the convolution ``method`` and the dropout mask applied after GELU.

    ``fft_autograd`` is :meth:`S4Layer.forward` line for line with :func:`autograd_fft_conv` in
    place of ``_FFTConv``: only the backward differs.
    """
    L = u.shape[1]
    mask = layer.dropout_mask(u)  # (B, H) or None: the same draw as the layer's
    if method == "fft_autograd":
        k = circular_kernel(layer.kernel(L), layer.D, fft_length(L))  # (H, n)
        ft = torch.promote_types(u.dtype, torch.float32)
        y = autograd_fft_conv(u, k.to(ft), None if mask is None else mask.to(ft))
        return layer.project(F.gelu(y), dropped=mask is not None)
    k2 = two_sided_kernel(layer.kernel(L)) + F.pad(layer.D[:, None], (L - 1, L - 1))  # (H, 2L-1), D at lag 0
    y = F.gelu(apply_kernel(u, k2.to(u.dtype), method))  # (B, L, H)
    if mask is not None:
        y = y * mask[:, None, :]
    return layer.project(y, dropped=mask is not None)


class _ToeplitzConv(torch.autograd.Function):
    """y (H, B, L) = x (H, B, L) @ T (H, L, L), T[h, i, j] = k2[h, j - i + L - 1]."""

    @staticmethod
    def forward(ctx, x, k2):
        L = x.shape[-1]
        T = k2.unfold(-1, L, 1).flip(1).contiguous()  # (H, L, L): unfold[a, b] = k2[a + b]
        ctx.save_for_backward(x, T)
        return torch.bmm(x, T)

    @staticmethod
    def backward(ctx, gy):
        x, T = ctx.saved_tensors
        H, B, L = x.shape
        gy = gy.to(x.dtype).contiguous()
        gx = torch.bmm(gy, T.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gk2 = None
        if ctx.needs_input_grad[1]:
            # dL/dk2[m] = sum_b sum_{i'+j=m} xf[b, i'] gy[b, j], xf the time-flipped input:
            # anti-diagonal sums of the (L, L) matrix xf^T gy, i.e. a full convolution.
            gk2 = _full_convolution_sum(x.flip(-1), gy).to(T.dtype)
        return gx, gk2


# Below this batch the (H, L, L) gradient matrix costs more than FFTs (measured, 2-core CPU)
FFT_GRAD_BELOW_BATCH = 128


def _full_convolution_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_b of the full linear convolution of a[h, b] and b[h, b]: (H, B, L) x 2 -> (H, 2L - 1)."""
    H, B, L = a.shape
    acc = torch.promote_types(a.dtype, torch.float32)  # at least float32: 250 bf16 terms lose too much
    if B < FFT_GRAD_BELOW_BATCH:
        n = 2 * L
        spectrum = (torch.fft.rfft(a.to(acc), n=n) * torch.fft.rfft(b.to(acc), n=n)).sum(1)  # (H, L + 1)
        return torch.fft.irfft(spectrum, n=n)[:, :2 * L - 1]
    # the matrix G = a^T b (one bmm), padded so that a row-shifted strided view lines up
    # its anti-diagonals i + j = m as columns
    G = torch.bmm(a.transpose(1, 2), b)  # (H, L, L)
    padded = F.pad(G, (0, L - 1)).reshape(H, -1)  # (H, L * (2L-1)), rows of width 2L-1
    diagonals = padded.as_strided((H, L, 2 * L - 1), (L * (2 * L - 1), 2 * L - 2, 1))  # [i, m] = G[i, m-i]
    return diagonals.sum(1, dtype=acc)


class _PlainFFTConv(torch.autograd.Function):
    """y (B, H, L) = first L samples of the circular convolution over n = 2L of zero-padded
    x (B, H, L) with k (H, 2L). Backward by hand with real FFTs only (autograd's rfft
    backward takes complex FFTs of full length, the largest cost on CPU)."""

    @staticmethod
    def forward(ctx, x, k):
        L = x.shape[-1]
        n = 2 * L
        X = torch.fft.rfft(x, n=n)  # (B, H, L + 1)
        Kf = torch.fft.rfft(k, n=n)  # (H, L + 1)
        ctx.save_for_backward(X, Kf)
        ctx.L = L
        return torch.fft.irfft(X * Kf, n=n)[..., :L]

    @staticmethod
    def backward(ctx, gy):
        X, Kf = ctx.saved_tensors
        n = 2 * ctx.L
        Gy = torch.fft.rfft(gy.to(X.real.dtype), n=n)  # (B, H, L + 1), gy zero-padded
        # gx[s] = sum_t gy[t] k[(t - s) mod n]; gk[d] = sum_b sum_t gy[t] x[(t - d) mod n]
        gx = torch.fft.irfft(Gy * Kf.conj(), n=n)[..., :ctx.L] if ctx.needs_input_grad[0] else None
        gk = torch.fft.irfft((Gy * X.conj()).sum(0), n=n) if ctx.needs_input_grad[1] else None
        return gx, gk


def autograd_fft_conv(u: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What ``labecg.s4._FFTConv.apply(u, k, mask)`` computes, written plainly with autograd's backward.

    u (B, L, H), k (H, n) circular kernel, mask (B, H) or None -> (B, L, H): the first L samples
    of the circular convolution over n points of the zero-padded u m with k.
    """
    L, n = u.shape[1], k.shape[-1]
    x = u.transpose(1, 2).to(k.dtype)  # (B, H, L)
    if mask is not None:
        x = x * mask[:, :, None]
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k), n=n)[..., :L]  # (B, H, L)
    return y.transpose(1, 2).to(u.dtype).contiguous()


def apply_kernel(u: torch.Tensor, k2: torch.Tensor, method: str = "fft",
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve each channel of u with its two-sided kernel.

    Parameters
    ----------
    u : tensor of shape (B, L, H)
    k2 : tensor of shape (H, 2L - 1), from :func:`two_sided_kernel`.
    method : {"fft", "fft_autograd", "fft_plain", "toeplitz"}
    mask : tensor of shape (B, H) or None
        0/1 per sequence and channel, constant over time: the result is multiplied by it.

    Returns
    -------
    y : tensor of shape (B, L, H), y[:, i] = mask sum_j k2[:, i - j + L - 1] u[:, j].
    """
    B, L, H = u.shape
    if k2.shape != (H, 2 * L - 1):
        raise ValueError(f"apply_kernel: k2 must have shape (H, 2L-1) = ({H}, {2 * L - 1}); got {tuple(k2.shape)}")
    if mask is not None and mask.shape != (B, H):
        raise ValueError(f"apply_kernel: mask must have shape (B, H) = ({B}, {H}); got {tuple(mask.shape)}")
    ft = torch.promote_types(u.dtype, torch.float32)  # no bf16 FFT on CPU
    if method in ("fft", "fft_autograd"):
        n = fft_length(L)
        k = torch.cat([k2[:, L - 1:], k2.new_zeros(H, n - 2 * L + 1), k2[:, :L - 1]], dim=-1)  # (H, n)
        conv = _FFTConv.apply if method == "fft" else autograd_fft_conv
        return conv(u, k.to(ft), None if mask is None else mask.to(ft))
    if method == "toeplitz":
        x = u.permute(2, 0, 1).contiguous()  # (H, B, L)
        # contiguous: elementwise backward passes (GELU) on mixed layouts are several times slower
        y = _ToeplitzConv.apply(x, k2).permute(1, 2, 0).contiguous()  # (B, L, H)
    elif method == "fft_plain":
        # circular layout over 2L: lag d >= 0 at index d, lag d < 0 at n + d
        k = torch.cat([k2[:, L - 1:], k2.new_zeros(H, 1), k2[:, :L - 1]], dim=-1)  # (H, 2L)
        x = u.transpose(1, 2).to(ft).contiguous()  # (B, H, L)
        y = _PlainFFTConv.apply(x, k.to(ft)).transpose(1, 2).to(u.dtype).contiguous()  # (B, L, H)
    else:
        raise ValueError(f"apply_kernel: method must be one of {METHODS}; got {method!r}")
    return y if mask is None else y * mask[:, None, :].to(y.dtype)


def run_recurrence(u: torch.Tensor, C: torch.Tensor, log_dt: torch.Tensor, log_a_re: torch.Tensor,
                   a_im: torch.Tensor) -> torch.Tensor:
    """The discrete state-space recurrence, step by step (test reference; slow).

    x_k = Abar x_{k-1} + Bbar u_k, y_k = 2 Re(C x_k) forward in time; with a second C the
    same over the flipped input, shifted one sample (see the module docstring). No D term.

    Parameters
    ----------
    u : tensor of shape (B, L, H)
    C : complex tensor of shape (n_dir, H, M)

    Returns
    -------
    y : tensor of shape (B, L, H)
    """
    A = torch.complex(-torch.exp(log_a_re), a_im)
    dtA = torch.exp(log_dt)[:, None] * A
    Abar, Bbar = torch.exp(dtA), (torch.exp(dtA) - 1.0) / A  # (H, M)
    B, L, H = u.shape

    def scan(seq, c):  # seq (B, L, H) -> (B, L, H)
        x = torch.zeros(B, H, A.shape[1], dtype=A.dtype, device=u.device)
        out = []
        for k in range(L):
            x = Abar * x + Bbar * seq[:, k, :, None]
            out.append(2.0 * (c * x).sum(-1).real)
        return torch.stack(out, dim=1)

    y = scan(u, C[0])
    if C.shape[0] == 2:
        yb = scan(u.flip(1), C[1]).flip(1)  # yb[i] = sum_{j>=i} Kb[j-i] u_j
        y = y + F.pad(yb[:, 1:], (0, 0, 0, 1))  # shift: output i gets sum_{j>i} Kb[j-i-1] u_j
    return y
