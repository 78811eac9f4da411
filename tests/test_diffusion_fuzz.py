"""Fuzzing the diffusion surface: schedules, the empirical denoiser and the samplers either
work (finite results) or raise AmlabError, whatever arrives."""

import torch
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import FUZZ, anything, states

from amlab import AmlabError
from amlab.diffusion import EmpiricalDenoiser, MLPDenoiser, VESchedule, VPSchedule, sample

MEMORIES = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [0.3, 0.3, 0.9]])
numbers = st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=2), st.none())


@FUZZ
@given(a=numbers, b=numbers, c=numbers)
def test_schedules_accept_or_raise_amlab_error(a, b, c):
    for make in (lambda: VESchedule(a, b), lambda: VPSchedule(a, b, c)):
        try:
            schedule = make()
        except AmlabError:
            continue
        for t in (schedule.t_end, 0.5, 1.0):
            assert 0 < schedule.noise_level(t) < float("inf") or schedule.noise_level(t) == 0


@FUZZ
@given(x=states, t=numbers, labels=anything, guidance=numbers)
def test_denoisers_accept_or_raise_amlab_error(x, t, labels, guidance):
    torch.manual_seed(0)
    models = [
        EmpiricalDenoiser(MEMORIES, VESchedule(0.05, 3.0)),
        MLPDenoiser(3, VPSchedule(), hidden=4, layers=1, num_classes=2),
    ]
    for model in models:
        try:
            out = model.score(x, t, labels, guidance)
        except AmlabError:
            continue
        assert out.shape[-1] == 3 and torch.isfinite(out).all()


@FUZZ
@given(x=states, steps=st.one_of(st.integers(-2, 4), st.floats(), st.none()), method=anything)
def test_samplers_accept_or_raise_amlab_error(x, steps, method):
    model = EmpiricalDenoiser(MEMORIES, VESchedule(0.05, 3.0))
    try:
        out = sample(model.score_fn(), model.schedule, x, steps=steps, method=method)
    except AmlabError:
        return
    assert torch.isfinite(out.states).all()
