from __future__ import annotations

import pytest

from starkmatter_operator import validation


@pytest.mark.parametrize(
    "schedule",
    [
        "*/5 * * * *",
        "0 3 * * *",
        "@daily",
        "0,30 9-17 * * MON-FRI",
        "15 2 1 JAN,JUL *",
        "0 0 * * 7",
    ],
)
def test_valid_cron_schedules_pass(schedule):
    assert validation.cron_problems(schedule) == []


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("* * * *", "must have 5 fields"),
        ("60 * * * *", "minute '60'"),
        ("* 24 * * *", "hour '24'"),
        ("* * 0 * *", "day-of-month '0'"),
        ("* * * 13 *", "month '13'"),
        ("* * * * 8", "day-of-week '8'"),
        ("*/0 * * * *", "minute '*/0'"),
        ("5-1 * * * *", "minute '5-1'"),
        ("* * * FOO *", "month 'FOO'"),
        ("@fortnightly", "must have 5 fields"),
    ],
)
def test_invalid_cron_schedules_say_which_field_is_wrong(schedule, problem):
    assert any(problem in p for p in validation.cron_problems(schedule))
