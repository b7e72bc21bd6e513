"""The harness-overhead benchmark's statistics: ratio of sums, paired bootstrap CI, verdict (pure, no timing)."""

from __future__ import annotations

import random

import pytest

from perf import overhead_stats as ost


def test_ratio_of_sums_is_busbw_ratio():
    # harness blocks 10% slower -> harness busbw is 1/1.1 of the bare loop's
    bare = [1.0, 2.0, 3.0]
    harness = [1.1, 2.2, 3.3]
    assert ost.ratio_of_sums(bare, harness) == pytest.approx(1 / 1.1)
    assert ost.block_ratios(bare, harness) == pytest.approx([1 / 1.1] * 3)


def test_ratio_of_sums_weights_blocks_by_time():
    # a long block counts more than a short one: (1 + 9) / (2 + 9), not the mean of 0.5 and 1
    assert ost.ratio_of_sums([1.0, 9.0], [2.0, 9.0]) == pytest.approx(10 / 11)


@pytest.mark.parametrize("bare,harness", [([], []), ([1.0], [1.0, 2.0])])
def test_ratio_of_sums_rejects_unpaired(bare, harness):
    with pytest.raises(ValueError):
        ost.ratio_of_sums(bare, harness)


def test_bootstrap_ci_of_identical_ratios_is_a_point():
    bare = [1.0, 2.0, 5.0, 3.0]
    lo, hi = ost.bootstrap_ci(bare, [b * 1.02 for b in bare], resamples=200)
    assert lo == pytest.approx(1 / 1.02) and hi == pytest.approx(1 / 1.02)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = random.Random(7)
    bare = [rng.uniform(1, 3) for _ in range(50)]
    harness = [b * rng.uniform(0.9, 1.1) for b in bare]
    ci = ost.bootstrap_ci(bare, harness, seed=3)
    assert ci == ost.bootstrap_ci(bare, harness, seed=3)
    assert ci[0] < ost.ratio_of_sums(bare, harness) < ci[1]


def test_pairing_cancels_drift():
    """Blocks whose speed drifts 3x but whose two sides agree give a tight CI; unpaired noise a wide one."""
    rng = random.Random(11)
    drift = [1 + 2 * i / 99 for i in range(100)]
    paired = ost.bootstrap_ci(drift, [d * rng.uniform(0.99, 1.01) for d in drift], seed=1)
    unpaired = ost.bootstrap_ci(drift, [rng.choice(drift) for _ in drift], seed=1)
    assert paired[1] - paired[0] < 0.01
    assert unpaired[1] - unpaired[0] > 0.1


def test_bootstrap_coverage_on_known_ratio():
    """In repeated synthetic experiments with a true ratio of 1/1.02, the 95% CI covers it about 95% of the time."""
    truth = 1 / 1.02
    covered = 0
    trials = 200
    for t in range(trials):
        rng = random.Random(1000 + t)
        bare = [rng.lognormvariate(0, 0.3) for _ in range(40)]
        harness = [rng.lognormvariate(0, 0.3) * 1.02 for _ in range(40)]
        # the true ratio of expected sums is exactly 1/1.02 (same distribution, scaled)
        lo, hi = ost.bootstrap_ci(bare, harness, resamples=400, seed=t)
        covered += lo <= truth <= hi
    assert 0.88 <= covered / trials <= 0.99


@pytest.mark.parametrize(
    "ci,expected",
    [
        ((0.98, 1.02), ost.WITHIN),
        ((0.97, 1.03), ost.WITHIN),  # the bounds themselves are inside
        ((0.96, 1.01), ost.NOT_SHOWN),  # the data allow a 4% loss
        ((0.99, 1.05), ost.NOT_SHOWN),  # ... or a 5% over-report
        ((0.90, 0.96), ost.OUTSIDE),  # a loss shown
        ((1.04, 1.10), ost.OUTSIDE),  # an over-report shown
        ((0.80, 1.30), ost.NOT_SHOWN),
    ],
)
def test_verdict_needs_the_whole_ci_inside_the_bar(ci, expected):
    assert ost.verdict(ci) == expected


def test_not_slower_is_the_one_sided_reading():
    assert ost.not_slower((0.975, 1.2))
    assert not ost.not_slower((0.96, 1.0))


def test_verdict_rejects_reversed_bounds():
    with pytest.raises(ValueError):
        ost.verdict((1.1, 0.9))


def test_compare_bundles_estimate_ci_and_verdict():
    bare = [1.0, 1.1, 0.9, 1.05, 0.95] * 4
    c = ost.compare(bare, list(bare), resamples=100)
    assert c.estimate == pytest.approx(1.0) and c.verdict == ost.WITHIN and c.blocks == 20
    d = c.as_dict()
    assert d["ci95"] == pytest.approx([1.0, 1.0]) and d["not_slower_than_3pct"] is True


def test_block_order_is_a_shuffle_per_block_and_reproducible():
    kinds = ("a", "b", "c", "d")
    order = ost.block_order(kinds, 50, seed=5)
    assert order == ost.block_order(kinds, 50, seed=5)  # every rank draws the same order
    assert all(sorted(o) == sorted(kinds) for o in order)
    assert len({tuple(o) for o in order}) > 5  # not one fixed order
    assert {o[0] for o in order} == set(kinds)  # every kind runs first sometimes


def test_pooled_ci_keeps_each_runs_weight_and_narrows():
    rng = random.Random(4)
    runs = []
    for scale in (1.0, 3.0):  # a quiet run and a busy one
        bare = [scale * rng.uniform(0.8, 1.2) for _ in range(60)]
        runs.append((bare, [b * rng.uniform(0.95, 1.05) for b in bare]))
    one = ost.bootstrap_ci(*runs[0], seed=2)
    both = ost.pooled_bootstrap_ci(runs, seed=2)
    assert both[1] - both[0] < one[1] - one[0]
    p = ost.pooled(runs, seed=2)
    all_bare = runs[0][0] + runs[1][0]
    all_harness = runs[0][1] + runs[1][1]
    assert p["estimate"] == pytest.approx(sum(all_bare) / sum(all_harness))
    assert p["blocks"] == 120 and p["runs"] == 2 and p["ci95"][0] < p["estimate"] < p["ci95"][1]


def test_pooled_rejects_unpaired_runs():
    with pytest.raises(ValueError):
        ost.pooled_bootstrap_ci([([1.0, 2.0], [1.0])])


def test_pool_results_reads_the_workers_layout():
    def result(sizes, scale):
        return {
            "rows": [
                {
                    "size_bytes": s,
                    "block_seconds": {
                        "bare": [1.0 * scale, 2.0 * scale, 1.5 * scale],
                        "harness_inplace": [1.0 * scale, 2.0 * scale, 1.5 * scale],
                        "harness_outofplace": [1.1 * scale, 2.2 * scale, 1.65 * scale],
                    },
                }
                for s in sizes
            ]
        }

    rows = ost.pool_results([result([1, 2], 1.0), result([2], 2.0)], seed=0)
    assert [r["size_bytes"] for r in rows] == [1, 2]  # each size pooled over the runs that measured it
    assert rows[0]["comparisons"]["inplace_vs_bare"]["runs"] == 1
    c = rows[1]["comparisons"]
    assert c["inplace_vs_bare"]["estimate"] == pytest.approx(1.0) and c["inplace_vs_bare"]["blocks"] == 6
    assert c["outofplace_vs_bare"]["estimate"] == pytest.approx(1 / 1.1)
    assert c["outofplace_vs_bare"]["verdict"] == ost.OUTSIDE
