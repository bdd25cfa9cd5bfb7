"""distill.eval.speculative.summarise_speculative: the measures from per-request stats, as `distill rescore`
recomputes them."""

from __future__ import annotations

import pytest

from distill.errors import DataError
from distill.eval.speculative import summarise_speculative
from distill.models.speculative import speedup_model


def _stats(**changes) -> dict:
    stats = {"tokens": 10, "proposed": 8, "accepted": 8, "acceptance_sum": 8.0, "overlap_t1_sum": 4.0,
             "overlap_count": 8, "target_forwards": 2, "draft_forwards": 8, "draft_seconds": 0.08,
             "wall_seconds": 1.0, "alone_forwards": 10, "alone_seconds": 1.0, "alone_wall_seconds": 2.0,
             "matches_target": True}
    return {**stats, **changes}


def test_the_cost_model_uses_the_acceptance_rate_and_the_t1_overlap_is_reported_beside_it():
    metrics = summarise_speculative([_stats(), _stats(matches_target=False)], 4, None)
    assert metrics["acceptance_rate"] == 1.0 and metrics["overlap_t1"] == 0.5
    assert metrics["cost_ratio"] == pytest.approx(0.1)
    assert metrics["speedup_model"] == pytest.approx(speedup_model(1.0, 4, 0.1)) == pytest.approx(5 / 1.4)
    assert metrics["matches_target"] == 0.5


def test_matches_target_is_null_for_sampled_decoding():
    """Two independent samples: agreement between them says nothing about exactness."""
    metrics = summarise_speculative([_stats(matches_target=None)], 4, 0.7)
    assert metrics["matches_target"] is None and metrics["acceptance_rate"] == 1.0


def test_stats_of_an_older_version_are_refused_in_one_line():
    old = _stats()
    for key in ("acceptance_sum", "overlap_t1_sum"):
        del old[key]
    old["overlap_sum"] = 4.0
    with pytest.raises(DataError, match="acceptance_sum") as error:
        summarise_speculative([old], 4, None)
    assert "\n" not in str(error.value) and "re-run" in str(error.value)
