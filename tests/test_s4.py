"""S4 layer: kernel against the step-by-step recurrence, the ZOH formula against scipy,
the layer's one convolution against the references of ``tests/reference/s4_convolutions.py``
(Toeplitz product, plain FFT), and (non-)causality."""

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from labecg.s4 import S4Layer, circular_kernel, fft_length, two_sided_kernel, vandermonde_kernel
from reference import s4_convolutions as s4_ref
from reference.s4_convolutions import METHODS, apply_kernel, layer_forward, run_recurrence


def _params(layer):
    return torch.view_as_complex(layer.C), layer.log_dt, layer.log_a_re, layer.a_im


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_kernel_convolution_equals_recurrence(bidirectional, method):
    torch.manual_seed(0)
    layer = S4Layer(6, d_state=8, bidirectional=bidirectional, dt_min=0.01, dt_max=0.5).double()
    with torch.no_grad():
        layer.log_a_re.uniform_(-3, 0)  # decay rates 0.05-1: kernels reach far
    u = torch.randn(3, 40, 6, dtype=torch.float64)
    with torch.no_grad():
        y_rec = run_recurrence(u, *_params(layer))
        y_conv = apply_kernel(u, two_sided_kernel(layer.kernel(40)), method)
    assert y_rec.abs().max() > 0.1
    torch.testing.assert_close(y_conv, y_rec, rtol=1e-10, atol=1e-10)


def test_zoh_discretization_matches_matrix_exponential():
    # One complex mode a as the real 2x2 system [[ar, -ai], [ai, ar]], B = (1, 0):
    # expm([[A dt, B dt], [0, 0]]) holds Abar and Bbar (zero-order hold).
    ar, ai, dt, c = -0.7, 2.3, 0.13, 0.4 - 1.1j
    A = np.array([[ar, -ai], [ai, ar]])
    M = np.zeros((3, 3))
    M[:2, :2], M[:2, 2] = A * dt, np.array([1.0, 0.0]) * dt
    E = expm(M)
    Abar, Bbar = E[:2, :2], E[:2, 2]
    L = 12
    x, K_ref = Bbar.copy(), []
    for _ in range(L):  # impulse response y_l = 2 Re(C x_l), x_0 = Bbar
        K_ref.append(2 * (c.real * x[0] - c.imag * x[1]))
        x = Abar @ x
    C = torch.tensor([[[c]]], dtype=torch.complex128)
    K = vandermonde_kernel(C, torch.tensor([np.log(dt)], dtype=torch.float64),
                           torch.tensor([[np.log(-ar)]], dtype=torch.float64),
                           torch.tensor([[ai]], dtype=torch.float64), L)
    np.testing.assert_allclose(K[0, 0].numpy(), K_ref, rtol=1e-12, atol=1e-14)


def test_toeplitz_gradients_equal_fft_gradients():
    torch.manual_seed(1)
    layer = S4Layer(5, d_state=4).double()
    u = torch.randn(2, 31, 5, dtype=torch.float64)
    w = torch.randn(2, 31, 5, dtype=torch.float64)
    grads = []
    for forward in (lambda x: layer_forward(layer, x, "toeplitz"), layer):
        layer.zero_grad()
        ui = u.clone().requires_grad_()
        (forward(ui) * w).sum().backward()
        grads.append([ui.grad] + [p.grad.clone() for p in layer.parameters()])
    for g_t, g_f in zip(*grads):
        torch.testing.assert_close(g_t, g_f, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("fft_grad_below_batch", [0, 10**9])  # both ways to the kernel gradient
def test_toeplitz_backward_passes_gradcheck(fft_grad_below_batch, monkeypatch):
    monkeypatch.setattr(s4_ref, "FFT_GRAD_BELOW_BATCH", fft_grad_below_batch)
    torch.manual_seed(2)
    u = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    k2 = torch.randn(3, 17, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: apply_kernel(a, b, "toeplitz"), (u, k2))


@pytest.mark.parametrize("method", METHODS)
def test_bidirectional_layer_sees_the_future_and_causal_does_not(method):
    torch.manual_seed(3)
    u = torch.randn(2, 50, 8)
    late = u.clone()
    late[:, 45] += 5.0
    for bidirectional in (True, False):
        layer = S4Layer(8, bidirectional=bidirectional, dt_min=0.05, dt_max=0.5).eval()
        forward = layer if method == "fft" else (lambda x, layer=layer: layer_forward(layer, x, method))
        with torch.no_grad():
            layer.log_a_re.fill_(np.log(0.02))  # slow decay: effect must reach 45 samples back
            diff = (forward(late) - forward(u)).abs()  # (B, L, H)
        if bidirectional:
            assert diff[:, 0].max() > 1e-3
        else:
            assert diff[:, :45].max() < 1e-5  # FFT round-off only
            assert diff[:, 45:].max() > 1e-3


def test_freeze_ssm_trains_only_c_d_and_projection():
    layer = S4Layer(4, freeze_ssm=True)
    layer(torch.randn(2, 20, 4)).sum().backward()
    for name in ("log_dt", "log_a_re", "a_im"):
        assert getattr(layer, name).grad is None and not getattr(layer, name).requires_grad
    assert layer.C.grad is not None and layer.D.grad is not None and layer.out.weight.grad is not None


def test_inv_init_linear_output_and_shape_errors():
    layer = S4Layer(4, d_state=6, ssm_init="inv", output="linear")
    assert layer(torch.randn(1, 10, 4)).shape == (1, 10, 4)
    with pytest.raises(ValueError, match="d_state"):
        S4Layer(4, d_state=7)
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(1, 10, 5))


@pytest.mark.parametrize("method", ["fft", "fft_plain"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_fft_backward_passes_gradcheck(method, with_mask):
    torch.manual_seed(4)
    u = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    k2 = torch.randn(3, 17, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64) if with_mask else None
    assert torch.autograd.gradcheck(lambda a, b: apply_kernel(a, b, method, mask=mask), (u, k2))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_hand_written_backward_equals_autograd(dropout):
    # the layer's _FFTConv against the same convolution differentiated by autograd
    # (tests/reference: fft_autograd); dropout 0.5 in training mode exercises the mask
    torch.manual_seed(5)
    layer = S4Layer(7, d_state=6, dropout=dropout).double().train()
    u = torch.randn(3, 29, 7, dtype=torch.float64)
    w = torch.randn(3, 29, 7, dtype=torch.float64)
    outputs, grads = [], []
    for forward in (layer, lambda x: layer_forward(layer, x, "fft_autograd")):
        layer.zero_grad()
        torch.manual_seed(6)  # the same dropout draw
        ui = u.clone().requires_grad_()
        y = forward(ui)
        (y * w).sum().backward()
        outputs.append(y.detach())
        grads.append([ui.grad] + [p.grad.clone() for p in layer.parameters()])
    assert torch.equal(outputs[0], outputs[1])  # same forward operations
    assert grads[0][0].abs().max() > 0.1
    for g_hand, g_auto in zip(*grads):
        torch.testing.assert_close(g_hand, g_auto, rtol=1e-10, atol=1e-12)


def test_fft_length_is_seven_smooth_multiple_of_eight():
    def smooth(m):  # no prime factor above 7, by trial division
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    assert fft_length(250) == 504  # 2^3 3^2 7 >= 499; 500 and 512 measured slower
    for L in (1, 2, 3, 40, 127, 128, 250, 1000):
        n = fft_length(L)
        assert n >= 2 * L - 1 and n % 8 == 0 and smooth(n)
        assert not any(smooth(m) for m in range(n - 8, 2 * L - 2, -8))  # the smallest such


@pytest.mark.parametrize("bidirectional", [True, False])
def test_circular_kernel_holds_both_kernels_and_d(bidirectional):
    torch.manual_seed(5)
    K = torch.randn(2 if bidirectional else 1, 3, 7, dtype=torch.float64)
    D = torch.randn(3, dtype=torch.float64)
    k = circular_kernel(K, D, 16)
    for d in range(7):  # lag d >= 0 at index d, lag -d at index n - d
        torch.testing.assert_close(k[:, d], K[0, :, d] + (D if d == 0 else 0))
    back = K[1] if bidirectional else torch.zeros(3, 7, dtype=torch.float64)
    for d in range(1, 7):
        torch.testing.assert_close(k[:, 16 - d], back[:, d - 1])
    assert (k[:, 7:10] == 0).all()
    with pytest.raises(ValueError, match="2L - 1"):
        circular_kernel(K, D, 12)


def test_training_dropout_is_the_same_in_every_method():
    # The layer folds the 0/1 mask into the padded input and the 1/(1-p) into the
    # projection; the references apply both after GELU. Same seed -> same mask -> same output.
    layer = S4Layer(6, d_state=4, dropout=0.5).double().train()
    u = torch.randn(4, 30, 6, dtype=torch.float64)
    outs, grads = [], []
    for forward in [layer] + [lambda x, m=m: layer_forward(layer, x, m) for m in METHODS]:
        layer.zero_grad()
        torch.manual_seed(6)
        y = forward(u)
        (y * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in layer.parameters()])
    for y, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(y, outs[0], rtol=1e-9, atol=1e-11)
        for a, b in zip(g, grads[0]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    torch.manual_seed(6)
    keep = (torch.rand(4, 6) >= 0.5).double()  # the mask drawn above, by hand
    layer.eval()
    with torch.no_grad():  # dropped channels: the projection sees GELU(conv) * keep * 2
        z = torch.nn.functional.gelu(apply_kernel(u, two_sided_kernel(layer.kernel(30))
                                                   + torch.nn.functional.pad(layer.D[:, None], (29, 29)), "fft_plain"))
        ref = torch.nn.functional.glu(layer.out(z * keep[:, None, :] * 2.0), dim=-1)
    torch.testing.assert_close(outs[0], ref, rtol=1e-9, atol=1e-11)


def test_legs_diagonal_is_the_normal_part_of_hippo_legs():
    """Eigenvalues against numpy's of the full matrix; B by the impulse response B^T exp(A t) B."""
    import numpy as np
    from scipy.linalg import expm

    from labecg.s4 import S4Layer, legs_diagonal

    N = 8
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            A[n, k] = -np.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else (-(n + 1) if n == k else 0.0)
    B = np.sqrt(2 * np.arange(N) + 1.0)
    P = np.sqrt(np.arange(N) + 0.5)
    normal = A + np.outer(P, P)
    a, b = (x.numpy().astype(np.complex128) for x in legs_diagonal(N))
    ev = np.linalg.eigvals(normal)
    np.testing.assert_allclose(np.sort(ev.imag[ev.imag > 0]), a.imag, rtol=1e-5)
    np.testing.assert_allclose(ev.real, -0.5, atol=1e-9)
    np.testing.assert_allclose(a.real, -0.5)
    for t in (0.05, 0.3, 1.0):
        want = B @ expm(normal * t) @ B
        got = 2 * np.real(np.sum(np.abs(b) ** 2 * np.exp(a * t)))
        assert got == pytest.approx(want, rel=1e-4)
    layer = S4Layer(16, d_state=N, ssm_init="legs")
    np.testing.assert_allclose(layer.a_im.detach()[3].numpy(), a.imag, rtol=1e-6)
