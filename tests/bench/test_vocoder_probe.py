"""The vocoder probes measure what they say: the polynomial Snake's fit and its graph, on tiny shapes."""
from __future__ import annotations

import numpy as np
import torch

from s3gen_bench.vocoder_probe import probe_snake, sin2_poly, snake_modules


def test_sin2_polynomial_error_falls_with_degree():
    f = np.linspace(-0.5, 0.5, 100001)
    errors = [np.abs(f * f * np.polyval(sin2_poly(d)[::-1], f * f) - np.sin(np.pi * f) ** 2).max() for d in (4, 5, 6)]
    assert errors[0] > errors[1] > errors[2] and errors[1] < 1e-6, errors


def test_polynomial_snake_matches_sin_snake_far_from_zero():
    alpha = torch.tensor([0.2, 1.0, 3.0]).view(1, 3, 1)
    x = torch.linspace(-300.0, 300.0, 4001).expand(1, 3, -1).contiguous()
    sin_form, poly_form = (cls(alpha) for cls in snake_modules(5))
    # whole turns are dropped exactly, so the error does not grow with |x| beyond fp32's rounding of x * alpha
    assert float((sin_form(x) - poly_form(x)).abs().max()) < 1e-3
    assert float((sin_form(x[..., 1900:2100]) - poly_form(x[..., 1900:2100])).abs().max()) < 5e-5


def test_snake_probe_reports_time_and_error_per_form():
    rows = probe_snake(degrees=(5,), shapes=((4, 256),))
    assert [r["form"] for r in rows] == ["sin", "poly5"]
    by_form = {r["form"]: r for r in rows}
    assert "Sin" in by_form["sin"]["ops"] and "Sin" not in by_form["poly5"]["ops"]
    assert all(r["ns_per_element"] > 0 for r in rows)
    assert by_form["poly5"]["max_abs_error"] < 1e-4 and by_form["sin"]["max_abs_error"] < 1e-4
