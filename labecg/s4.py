"""A bidirectional diagonal state-space layer (S4D) for ECG windows.

From the recurrence to the kernel
---------------------------------
Each channel h of the input u (B, L, H) drives its own linear system with a complex
diagonal state matrix A = diag(a_1, ..., a_M), a_n = -exp(log_a_re) + i a_im, input
vector B = 1 and output vector C. In continuous time x'(t) = A x(t) + B u(t),
y(t) = 2 Re(C x(t)) (see below for the 2). Zero-order hold with step Delta = exp(log_dt) (u held constant over
a sample) gives the discrete recurrence

    x_k = Abar x_{k-1} + Bbar u_k,   y_k = 2 Re(C x_k),
    Abar = exp(Delta A),   Bbar = (exp(Delta A) - 1) / A * B.

Unrolling from x_{-1} = 0: x_k = sum_{j<=k} Abar^{k-j} Bbar u_j, hence

    y_k = sum_{j<=k} K_{k-j} u_j,   K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l),

a causal convolution with the kernel K of length L. Because Abar is diagonal, K is a
Vandermonde product: the (M, L) matrix of powers exp(Delta a_n l) weighted by C_n Bbar_n.
The factor 2 Re is the conjugate partner of each mode: M = d_state / 2 complex modes and
their conjugates form a real system of size N = d_state, as in S4D and in the authors' S4
with N = 8.

Bidirectional: a second kernel Kb (its own C) runs over the time-flipped input, shifted by
one sample so that the present sample is counted once (by the forward kernel and D):

    y_i = sum_{j<=i} Kf[i-j] u_j + sum_{j>i} Kb[j-i-1] u_j + D u_i.

D u_i is the lag-0 term, so it is added to the kernel's centre, k2[L - 1] += D.
Both together form one (L, L) Toeplitz matrix per channel, T[i, j] = k2[j - i + L - 1]
for input index i and output index j, with k2 = [Kb[L-2], ..., Kb[0], Kf[0], ..., Kf[L-1]]
of length 2L - 1.

Applying the kernel
-------------------
One way: a zero-padded FFT convolution over n >= 2L - 1 points (:func:`fft_length`, 504 for
L = 250), the kernel laid out circularly (lag d >= 0 at index d, lag d < 0 at n + d) with D at
lag 0 (:func:`circular_kernel`), the (B, L, H) input transposed, cast and zero-padded in one
copy, the dropout mask applied to that padded copy (no pass over the layer's output), and a
hand-written backward with real FFTs only (:class:`_FFTConv`).

The tests hold the references (``tests/reference/s4_convolutions.py``): the step-by-step
recurrence, this convolution with autograd's backward (``fft_autograd``, the S4D reference
code's way: same forward bit for bit, gradients equal to 1e-10), the plain FFT convolution
(n = 2L, the authors' way) and the Toeplitz matrix product. ``bench/model.py`` times them
(paper size, fwd + bwd + AdamW, interleaved medians) and prints each one's time per step and
samples/s beside the others'. The hand-written backward stays because it gives more samples/s
than autograd's at batch 32 and 256; the three FFT ways are close, and their order at batch
256 varies from run to run.

Block layout of :class:`S4Layer` (the authors' S4 block)
--------------------------------------------------------
u (B, L, H) -> SSM convolution (with D u) -> GELU -> dropout (one mask per sequence and channel,
shared over time) -> Linear(H, 2H) + GLU (or Linear(H, H)) -> (B, L, H). Residual
connection and normalization belong to the model (``labecg.model``).

The 0/1 dropout mask m (B, H) is constant over time, so it commutes with the per-channel
convolution and with GELU (GELU(0) = 0): GELU(conv(u)) m = GELU(conv(u m)). The layer
therefore multiplies u by m while padding it, and the 1 / (1 - p) rescaling goes into
the projection's weight (a (2H, H) product instead of a (B, L, H) pass); same result as the
plain order, two passes over (B, L, H) fewer forward and backward.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: Optimizer groups. A parameter's group is set where it is created, as the attribute
#: ``_optim`` (the S4 reference code's name), and :func:`labecg.train.parameter_groups` reads
#: it: "ssm" the state matrix and step sizes (no weight decay, their own learning rate),
#: "no_decay" biases and normalization weights; an untagged parameter decays ("decay").
OPTIM_GROUPS = ("decay", "no_decay", "ssm")


def tag_optim(param: nn.Parameter, group: str) -> nn.Parameter:
    """``param`` with its optimizer group (one of :data:`OPTIM_GROUPS`) set as ``param._optim``."""
    if group not in OPTIM_GROUPS:
        raise ValueError(f"tag_optim: group must be one of {OPTIM_GROUPS}; got {group!r}")
    param._optim = group
    return param


def tag_no_decay(module: nn.Module) -> None:
    """Tag "no_decay" every bias and every LayerNorm/BatchNorm parameter inside ``module`` that
    carries no group yet (the S4 reference's optimizer hooks exempt them from weight decay)."""
    for m in module.modules():
        norm = isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
        for name, p in m.named_parameters(recurse=False):
            if (norm or name == "bias") and not hasattr(p, "_optim"):
                tag_optim(p, "no_decay")


def vandermonde_kernel(C: torch.Tensor, log_dt: torch.Tensor, log_a_re: torch.Tensor,
                       a_im: torch.Tensor, L: int) -> torch.Tensor:
    """ZOH-discretized S4D kernels K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l).

    Parameters
    ----------
    C : complex tensor of shape (n_dir, H, M)
        Output vectors, one per direction (forward, backward).
    log_dt : tensor of shape (H,)
        Log step size per channel (in sample units).
    log_a_re, a_im : tensors of shape (H, M)
        A = -exp(log_a_re) + i a_im.
    L : int
        Kernel length in samples.

    Returns
    -------
    K : tensor of shape (n_dir, H, L), real, dtype of ``log_dt``.
    """
    A = torch.complex(-torch.exp(log_a_re), a_im)  # (H, M)
    dt = torch.exp(log_dt)[:, None]  # (H, 1)
    W = C * ((torch.exp(dt * A) - 1.0) / A)  # (n_dir, H, M): C Bbar, B = 1
    # Abar^l = exp(dt a_re l) (cos + i sin)(dt a_im l) in real arithmetic: complex exp over
    # (H, M, L) and its backward cost twice as much on CPU
    lags = torch.arange(L, device=log_dt.device, dtype=log_dt.dtype)
    decay = torch.exp((dt * A.real)[..., None] * lags)  # (H, M, L)
    angle = (dt * a_im)[..., None] * lags
    powers = torch.cat([decay * torch.cos(angle), decay * torch.sin(angle)], dim=1)  # (H, 2M, L)
    weights = torch.cat([W.real, -W.imag], dim=-1)  # (n_dir, H, 2M): Re(w p) = w_re p_re - w_im p_im
    return 2.0 * torch.einsum("chm,hml->chl", weights, powers)


def two_sided_kernel(K: torch.Tensor) -> torch.Tensor:
    """Stack forward and backward kernels into k2 of length 2L - 1.

    Parameters
    ----------
    K : tensor of shape (n_dir, H, L)
        n_dir = 1 (causal: the backward half is zero) or 2 (forward, backward).

    Returns
    -------
    k2 : tensor of shape (H, 2L - 1); k2[L - 1 + d] multiplies u_{i} for output i + d.
    """
    kf = K[0]
    kb = K[1, :, :-1].flip(-1) if K.shape[0] == 2 else torch.zeros_like(kf[:, :-1])
    return torch.cat([kb, kf], dim=-1)


def fft_length(L: int) -> int:
    """FFT size for the linear convolution of L samples with a two-sided kernel of 2L - 1 lags.

    The smallest multiple of 8 >= 2L - 1 with no prime factor above 7: such sizes are fast
    for the FFT, while a power of two can be slower on a CPU (MKL), its row stride being one
    (``bench/model.py`` prints an rfft + irfft pair's time over 500, 504 and 512 points).
    """
    n = 8 * math.ceil((2 * L - 1) / 8)
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 8


def circular_kernel(K: torch.Tensor, D: torch.Tensor | None, n: int) -> torch.Tensor:
    """Forward and backward kernels (and D) laid out for a circular convolution over n points.

    Parameters
    ----------
    K : tensor of shape (n_dir, H, L)
        n_dir = 1 (causal) or 2 (forward, backward), as from :func:`vandermonde_kernel`.
    D : tensor of shape (H,) or None
        Skip term, added at lag 0.
    n : int
        FFT size, at least 2L - 1.

    Returns
    -------
    k : tensor of shape (H, n); k[:, d] = lag d for 0 <= d < L, k[:, n - d] = lag -d for
        0 < d < L (= Kb[d - 1]), zeros between.
    """
    n_dir, H, L = K.shape
    if n < 2 * L - 1:
        raise ValueError(f"circular_kernel: n must be >= 2L - 1 = {2 * L - 1}; got {n}")
    parts = K.unbind(0)  # one backward op (stack), where indexing K[0], K[1] costs one per index
    kf = parts[0] if D is None else torch.cat([parts[0][:, :1] + D[:, None], parts[0][:, 1:]], dim=-1)
    kb = parts[1][:, :-1].flip(-1) if n_dir == 2 else K.new_zeros(H, L - 1)
    return torch.cat([kf, K.new_zeros(H, n - 2 * L + 1), kb], dim=-1)


def _pad_channels_first(u: torch.Tensor, n: int, dtype: torch.dtype, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, H) -> (B, H, n) in ``dtype``, zero-padded, times mask (B, H)."""
    B, L, H = u.shape
    xp = torch.empty(B, H, n, dtype=dtype, device=u.device)
    xp[..., :L].copy_(u.transpose(1, 2))  # copy_ has a fast transposing path, mul(out=) is 2x slower
    if mask is not None:
        xp[..., :L].mul_(mask[:, :, None])
    xp[..., L:].zero_()
    return xp


def _first_samples_channels_last(y: torch.Tensor, L: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, n) -> (B, L, H) contiguous in ``dtype``: one pass."""
    out = torch.empty(y.shape[0], L, y.shape[1], dtype=dtype, device=y.device)
    out.transpose(1, 2).copy_(y[..., :L])
    return out


class _FFTConv(torch.autograd.Function):
    """y (B, L, H) = first L samples of the circular convolution over n points of the
    zero-padded (u m) (B, L, H) with k (H, n), m a fixed (B, H) mask or None.

    Transpose, zero padding and dtype cast are one copy of the input, the mask multiplies that
    copy in place; the real FFTs run along the contiguous last dimension. Backward by hand
    with real FFTs only (autograd's rfft backward takes complex FFTs of full length, the
    largest cost on CPU).
    """

    @staticmethod
    def forward(ctx, u, k, mask):
        L, n = u.shape[1], k.shape[-1]
        X = torch.fft.rfft(_pad_channels_first(u, n, k.dtype, mask))  # (B, H, n/2 + 1)
        Kf = torch.fft.rfft(k)  # (H, n/2 + 1)
        ctx.save_for_backward(X, Kf, mask)
        ctx.L, ctx.u_dtype = L, u.dtype
        return _first_samples_channels_last(torch.fft.irfft(X * Kf, n=n), L, u.dtype)

    @staticmethod
    def backward(ctx, gy):
        X, Kf, mask = ctx.saved_tensors
        L, n = ctx.L, 2 * (Kf.shape[-1] - 1)
        # gx[s] = m sum_t gy[t] k[(t - s) mod n]; gk[d] = sum_b sum_t gy[t] (u m)[(t - d) mod n]
        Gy = torch.fft.rfft(_pad_channels_first(gy, n, Kf.real.dtype, mask))  # m gy: m is 0/1
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _first_samples_channels_last(torch.fft.irfft(Gy * Kf.conj(), n=n), L, ctx.u_dtype)
        gk = torch.fft.irfft(Gy.mul_(X.conj()).sum(0), n=n) if ctx.needs_input_grad[1] else None
        return gx, gk, None


def legs_diagonal(d_state: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS: eigenvalues and projected input vector of HiPPO-LegS's normal part.

    HiPPO-LegS (N = ``d_state``): A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for
    n = k, 0 above; B_n = sqrt(2n+1). With P_n = sqrt(n + 1/2), A + P P^T = S - I/2, S
    skew-symmetric, so its eigenvalues are -1/2 + i w. As in the S4 reference code
    (``dplr.nplr``, used by S4D's "legs" initialization) the eigenvectors V of the normal
    part diagonalize it, B becomes V^* B, and one eigenvalue of each conjugate pair is kept
    (here the one with w > 0; the kernel's 2 Re adds the partner).

    Returns
    -------
    a : complex tensor of shape (N/2,)
        Eigenvalues, real part -1/2, imaginary part ascending.
    b : complex tensor of shape (N/2,)
        V^* B for the kept eigenvectors.
    """
    import numpy as np

    N = d_state
    q = np.sqrt(2 * np.arange(N) + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(N) + 1.0)
    p = np.sqrt(np.arange(N) + 0.5)
    S = A + np.outer(p, p) + 0.5 * np.eye(N)  # skew-symmetric
    w, V = np.linalg.eigh(-1j * S)  # S = i (-i S), -i S Hermitian: eigenvalues of S are i w
    keep = np.argsort(w)[N // 2:]  # w > 0 (they come in +- pairs)
    a = -0.5 + 1j * w[keep]
    b = V[:, keep].conj().T @ q
    return torch.tensor(a, dtype=torch.complex64), torch.tensor(b, dtype=torch.complex64)


class S4Layer(nn.Module):
    """Bidirectional S4D layer: (B, L, H) -> (B, L, H).

    Layout: SSM convolution + D skip -> GELU -> dropout shared over time -> Linear(H, 2H)
    + GLU (``output="glu"``) or Linear(H, H) (``output="linear"``).

    Parameters
    ----------
    d_model : int
        Channels H.
    d_state : int
        State size N (even); N/2 complex modes with their conjugates.
    bidirectional : bool
        Add a backward kernel over the time-flipped input (non-causal layer).
    dropout : float
        Drop probability; one mask per (sequence, channel), shared over time.
    ssm_init : {"lin", "inv", "legs"}
        S4D-Lin (a_im = pi n, B = 1), S4D-Inv (a_im = N/pi (N/(2n+1) - 1), B = 1) or S4D-LegS
        (A and B of the diagonalized normal part of HiPPO-LegS, :func:`legs_diagonal`: the
        diagonal counterpart of the authors' S4 with HiPPO-LegS); a_re = -1/2 in all three.
        The kernel keeps B = 1 and carries LegS's B in the initial C (only C B enters K).
    dt_min, dt_max : float
        Range of the log-uniform initial step sizes (sample units).
    freeze_ssm : bool
        Keep A and the step sizes fixed (the authors' code trains only C, D and the
        projection).
    output : {"glu", "linear"}

    The state matrix and step sizes (``log_dt``, ``log_a_re``, ``a_im``) are tagged "ssm",
    the projection's bias "no_decay" (:func:`tag_optim`); C and D decay.
    """

    def __init__(self, d_model: int, d_state: int = 8, bidirectional: bool = True, dropout: float = 0.0,
                 ssm_init: Literal["lin", "inv", "legs"] = "lin", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 freeze_ssm: bool = False, output: Literal["glu", "linear"] = "glu"):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4Layer: d_state must be an even number >= 2; got {d_state}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"S4Layer: dropout must be in [0, 1); got {dropout}")
        if ssm_init not in ("lin", "inv", "legs") or output not in ("glu", "linear"):
            raise ValueError(f"S4Layer: ssm_init in (lin, inv, legs), output in (glu, linear); "
                             f"got {ssm_init!r}, {output!r}")
        H, M = d_model, d_state // 2
        self.d_model, self.d_state, self.bidirectional = H, d_state, bidirectional
        n = torch.arange(M, dtype=torch.float32)
        b = torch.ones(M, dtype=torch.complex64)
        if ssm_init == "legs":
            a, b = legs_diagonal(d_state)
            a_im = a.imag.float()
        else:
            a_im = math.pi * n if ssm_init == "lin" else d_state / math.pi * (d_state / (2 * n + 1) - 1)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = tag_optim(nn.Parameter(log_dt, requires_grad=not freeze_ssm), "ssm")  # (H,)
        self.log_a_re = tag_optim(nn.Parameter(torch.full((H, M), math.log(0.5)), requires_grad=not freeze_ssm), "ssm")
        self.a_im = tag_optim(nn.Parameter(a_im.repeat(H, 1), requires_grad=not freeze_ssm), "ssm")  # (H, M)
        n_dir = 2 if bidirectional else 1
        c = torch.view_as_complex(torch.randn(n_dir, H, M, 2) * math.sqrt(0.5)) * b  # C B: (n_dir, H, M)
        self.C = nn.Parameter(torch.view_as_real(c).contiguous())  # complex as (re, im)
        self.D = nn.Parameter(torch.randn(H))
        self.dropout = dropout
        self.out = nn.Linear(H, 2 * H if output == "glu" else H)
        self.glu = output == "glu"
        tag_no_decay(self)

    def kernel(self, L: int) -> torch.Tensor:
        """The forward (and backward) kernels, tensor of shape (n_dir, H, L)."""
        return vandermonde_kernel(torch.view_as_complex(self.C), self.log_dt, self.log_a_re, self.a_im, L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, L, H) -> (B, L, H)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S4Layer: expected input (batch, length, {self.d_model}); got {tuple(u.shape)}")
        L = u.shape[1]
        mask = self.dropout_mask(u)  # (B, H) or None
        k = circular_kernel(self.kernel(L), self.D, fft_length(L))  # (H, n), D u_i is lag 0
        ft = torch.promote_types(u.dtype, torch.float32)  # no bf16 FFT on CPU
        y = _FFTConv.apply(u, k.to(ft), None if mask is None else mask.to(ft))  # (B, L, H), times mask
        return self.project(F.gelu(y), dropped=mask is not None)

    def dropout_mask(self, u: torch.Tensor) -> torch.Tensor | None:
        """0/1 mask of shape (B, H), one draw per sequence and channel, in training; else None."""
        if not (self.training and self.dropout > 0):
            return None
        return (torch.rand(u.shape[0], u.shape[2], device=u.device) >= self.dropout).to(u.dtype)

    def project(self, y: torch.Tensor, dropped: bool) -> torch.Tensor:
        """(B, L, H) -> (B, L, H): the output projection (+ GLU); 1 / (1 - p) folded into its weight."""
        weight = self.out.weight / (1.0 - self.dropout) if dropped else self.out.weight  # inverted dropout scale
        y = F.linear(y, weight, self.out.bias)  # (B, L, 2H) or (B, L, H)
        return F.glu(y, dim=-1) if self.glu else y
