"""`amlab repro fairness` on a small grid: the files, the planted bias found in both
baselines, each mitigation shrinking the gap it targets, and the ranking comparison."""

import pytest
from conftest import check_written_report, run_tiny_repro

from amlab.experiments.fairness import QUICK, Grid, run
from amlab.experiments.fairness.ranking import all_pairs_verdict, compare, verdict

# the transformer and its mitigations (the bag-of-words ones are tested in
# test_fairness_tasks.py); 200 steps on 2000 sentences take about 3 s per model
TINY = Grid(
    corpus_size=2000,
    transformer_steps=200,
    resamples=50,
    models=tuple(("transformer", m) for m in ("none", "reweight", "cda", "clp")),
)


def test_repro_fairness_small_grid(tmp_path):
    out, metrics, calls = run_tiny_repro(run, tmp_path / "fair", TINY)
    report, on_disk = check_written_report(
        out,
        ["Models and audits", "Group metrics", "Individual metrics"],
        ["fpr_per_term.png", "swap_matrix.png"],
        calls,
    )
    verdicts = {c["paper"]: c["verdict"] for c in on_disk["claims"]}
    assert len(verdicts) == 6
    assert len(metrics["ranking_all_pairs"]) == 9
    for claim, verdict_ in verdicts.items():
        if "over-predicts" in claim:
            assert verdict_ == "found", claim
        elif "shrinks" in claim:
            assert verdict_ == "shrinks", claim
    assert set(metrics["reweighting_shrinks_group_gap"]) == {"transformer+reweight"}
    assert set(metrics["mitigation_shrinks_counterfactual_gap"]) == {
        "transformer+cda",
        "transformer+clp",
    }
    assert set(metrics["ranking"]["group_rank"]) == set(metrics["models"])
    assert metrics["test_set"]["size"] == 680
    for name in metrics["models"]:
        assert (out / "models" / name.replace("+", "-") / "model" / "config.json").is_file()
    assert QUICK.corpus_size < Grid().corpus_size


def test_ranking_comparison_hand_computed():
    c = compare({"a": (0.1, 0.5), "b": (0.2, 0.1), "c": (0.3, 0.3)})
    assert c["group_rank"] == {"a": 1, "b": 2, "c": 3}
    assert c["individual_rank"] == {"a": 3, "b": 1, "c": 2}
    assert c["opposite_pairs"] == [("a", "b"), ("a", "c")]
    assert c["kendall_tau"] == pytest.approx(-1 / 3)
    assert verdict(c) == "reproduced"
    same = compare({"a": (0.1, 0.1), "b": (0.2, 0.3), "c": (0.3, 0.2)})
    assert verdict(same).startswith("partly: same fairest model, 1 of 3")
    assert verdict(compare({"a": (0.1, 0.1), "b": (0.2, 0.2)})) == "not reproduced"
    assert all_pairs_verdict(5, 9) == "reproduced"
    assert all_pairs_verdict(4, 9) == "partly: 4 of 9 pairs"
    assert all_pairs_verdict(0, 9) == "not reproduced"
