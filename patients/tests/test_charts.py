"""The server-drawn charts' geometry (patients/charts.py)."""

from __future__ import annotations

import pytest

from patients import charts


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (0.3, 0.5), (7, 10), (10, 10), (11, 20), (23, 25),
                                                (26, 50), (999, 1000), (1001, 2000)])
def test_the_axis_ends_on_a_round_number(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


def test_bars_scale_to_the_axis_and_gaps_are_skipped():
    chart = charts.chart(["a", "b", "c", "d"], bars=[10, None, 20, 0])

    plot_height = chart.baseline - charts.TOP  # 180 of 220
    assert [(bar.label, bar.value, bar.height) for bar in chart.bars] == [
        ("a", 10, plot_height * 10 / 20), ("c", 20, plot_height), ("d", 0, 0)]
    assert [tick.label for tick in chart.ticks] == ["0", "5", "10", "15", "20"]
    assert all(bar.y + bar.height == chart.baseline for bar in chart.bars)


def test_a_line_leaves_out_missing_points_and_labels_are_thinned():
    chart = charts.chart([str(n) for n in range(10)], lines={"median": [1, None, 2] + [2] * 7}, every_nth_label=4)

    points = chart.lines["median"].split()
    assert len(points) == 9
    assert [label for _, label in chart.x_labels] == ["0", "4", "8", "9"]
    first_x = charts.LEFT + (charts.WIDTH - charts.RIGHT - charts.LEFT) / 10 * 0.5
    assert points[0] == f"{first_x},{chart.baseline - 90.0}"  # 1 on an axis of 0..2
