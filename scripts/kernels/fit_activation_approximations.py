"""Derive the polynomial coefficients used by recgrad.kernels.activations (run: python this_file.py).

Two approximations, each a Chebyshev interpolant of a smooth function on a closed interval,
computed in 50-digit arithmetic (mpmath) and printed as Python source:

- q(r) = (e^r - 1 - r) / r^2 on |r| <= ln(2)/2, the core of exp and expm1 after the range
  reduction x = k ln 2 + r: e^r - 1 = r + r^2 q(r). Printed as monomial coefficients (Horner);
  the interval is small enough for the monomial basis to be well conditioned.
- F(t) = erfcx(z) / t with t = 2 / (2 + z), z >= 0 and erfcx(z) = e^(z^2) erfc(z), so that
  erfc(z) = t e^(-z^2) F(t). Fitted on t in [t_min, 1], t_min = 2 / (2 + z_max), z_max being
  where erfc(z) underflows in the dtype. Interpolated in w = (2 t - 1 - t_min) / (1 - t_min) in
  [-1, 1] and printed as monomial coefficients in w (Horner): the sum of their magnitudes is 1.01-1.02
  for F in [0.28, 1], so the monomial form loses nothing to cancellation.

The degree is the smallest one whose interpolation error (measured on 400 points, relative)
is below the target. For q the target bounds what the kernels use, e^r = 1 + r + r^2 q(r)
(q's own error is damped by r^2 / e^r <= 0.06 there): 1.5e-8 (float32) and 2.8e-17
(float64), a quarter of the unit roundoff. For F (erfc's relative error) it is 6e-8 (float32,
one unit roundoff: the kernel's float32 roundings already add several of those, and the test
bound is 1e-6) and 5e-17 (float64). The coefficients are then rounded to the dtype;
docs/kernels.md lists the errors measured after that rounding, inside the kernels.
"""

import mpmath as mp

mp.mp.dps = 50
LN2_HALF = mp.log(2) / 2
# erfc(z) < smallest subnormal beyond these (float32: 1.4e-45 ~ e^-103.3; float64: 4.9e-324 ~ e^-744.4)
Z_MAX = {"float32": mp.mpf("10.1"), "float64": mp.mpf("27.3")}
TARGET_EXP = {"float32": mp.mpf("1.5e-8"), "float64": mp.mpf("2.8e-17")}
TARGET_F = {"float32": mp.mpf("6e-8"), "float64": mp.mpf("5e-17")}


def q(r):
    if abs(r) < mp.mpf("1e-30"):
        return mp.mpf(1) / 2
    return (mp.exp(r) - 1 - r) / r**2


def chebyshev_fit(f, a, b, degree):
    """Chebyshev coefficients c_0..c_degree of the interpolant of f at the Chebyshev nodes of [a, b]."""
    n = degree + 1
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n) for k in range(n)]
    values = [f((b - a) / 2 * w + (b + a) / 2) for w in nodes]
    coefficients = []
    for j in range(n):
        total = sum(values[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / n) for k in range(n))
        coefficients.append(2 * total / n)
    coefficients[0] /= 2
    return coefficients


def chebyshev_to_monomial(coefficients, a, b):
    """Monomial coefficients (in x, lowest first) of sum c_j T_j((2x - a - b) / (b - a))."""
    scale, shift = 2 / (b - a), -(a + b) / (b - a)
    t_prev, t_cur = [mp.mpf(1)], [shift, scale]  # T_0, T_1 of the mapped variable
    result = [coefficients[0]] + [mp.mpf(0)] * (len(coefficients) - 1)
    for j in range(1, len(coefficients)):
        for i, v in enumerate(t_cur):
            result[i] += coefficients[j] * v
        nxt = [mp.mpf(0)] * (len(t_cur) + 1)
        for i, v in enumerate(t_cur):  # T_{j+1} = 2 y T_j - T_{j-1}, y = scale x + shift
            nxt[i + 1] += 2 * scale * v
            nxt[i] += 2 * shift * v
        for i, v in enumerate(t_prev):
            nxt[i] -= v
        t_prev, t_cur = t_cur, nxt
    return result


def max_relative_error(f, approx, a, b, points=4000):
    return max(abs(approx(x) / f(x) - 1) for x in (a + (b - a) * mp.mpf(i) / (points - 1) for i in range(points)))


def fit_q(dtype):
    """q's monomial coefficients and the relative error of e^r = 1 + r + r^2 q(r) they give."""
    a, b = -LN2_HALF, LN2_HALF
    for degree in range(3, 20):
        monomial = chebyshev_to_monomial(chebyshev_fit(q, a, b, degree), a, b)
        error = max_relative_error(mp.exp, lambda r, m=monomial: 1 + r + r * r * mp.polyval(m[::-1], r), a, b, 400)
        if error < TARGET_EXP[dtype]:
            return monomial, error


def fit_f(dtype):
    t_min = 2 / (2 + Z_MAX[dtype])

    def f(t):
        z = 2 / t - 2
        return mp.erfc(z) * mp.exp(z * z) / t

    for degree in range(4, 60):
        monomial = chebyshev_to_monomial(chebyshev_fit(f, t_min, 1, degree), -1, 1)  # in w, not t
        error = max_relative_error(
            f, lambda t, m=monomial: mp.polyval(m[::-1], (2 * t - 1 - t_min) / (1 - t_min)), t_min, 1, 400
        )
        if error < TARGET_F[dtype]:
            return monomial, error, t_min


def main():
    for dtype in ("float32", "float64"):
        monomial, error = fit_q(dtype)
        print(f"# {dtype}: q(r), degree {len(monomial) - 1}, error of e^r {mp.nstr(error, 3)}")
        print(f"_EXP_Q_{dtype[-2:]} = ({', '.join(repr(float(c)) for c in monomial)})")
        coefficients, error, t_min = fit_f(dtype)
        print(f"# {dtype}: F(t), degree {len(coefficients) - 1}, interpolation error {mp.nstr(error, 3)}")
        print(f"_ERFC_T_MIN_{dtype[-2:]} = {float(t_min)!r}")
        print(f"_ERFC_F_{dtype[-2:]} = ({', '.join(repr(float(c)) for c in coefficients)})")


if __name__ == "__main__":
    main()
