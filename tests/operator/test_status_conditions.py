from __future__ import annotations

from starkmatter_operator import conditions


def deployment(want, ready, *, generation=1, observed=1, updated=None, extra=None):
    return {
        "metadata": {"name": "d", "generation": generation},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": observed,
            "replicas": want,
            "updatedReplicas": want if updated is None else updated,
            "readyReplicas": ready,
            "conditions": extra or [],
        },
    }


def by_type(conds):
    return {c["type"]: c for c in conds}


def test_all_pods_ready_means_ready_not_progressing_not_degraded():
    health = conditions.deployment_health([deployment(1, 1), deployment(2, 2)])
    conds = by_type(conditions.compute(3, health, None))
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["message"] == "3/3 pods ready"
    assert conds["Progressing"]["status"] == "False"
    assert conds["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in conds.values())


def test_a_rollout_in_flight_is_progressing():
    health = conditions.deployment_health([deployment(2, 2, generation=2, observed=1)])
    conds = by_type(conditions.compute(2, health, None))
    assert conds["Ready"]["status"] == "False"
    assert conds["Progressing"]["status"] == "True"
    assert conds["Progressing"]["reason"] == "RollingOut"


def test_a_problem_is_degraded_with_the_message_that_says_what_to_fix():
    problem = conditions.Problem("SecretMissing", "Secret a/b not found: create it")
    conds = by_type(conditions.compute(1, conditions.Health(), problem))
    assert conds["Degraded"] == {
        "type": "Degraded",
        "status": "True",
        "reason": "SecretMissing",
        "message": "Secret a/b not found: create it",
        "observedGeneration": 1,
    }
    assert conds["Ready"]["status"] == "False"


def test_a_stuck_deployment_is_degraded():
    stuck = deployment(
        1,
        0,
        extra=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "took too long"}
        ],
    )  # fmt: skip
    conds = by_type(conditions.compute(1, conditions.deployment_health([stuck]), None))
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "ProgressDeadlineExceeded"


def test_transition_time_only_moves_when_the_status_changes():
    first = conditions.merge(None, conditions.compute(1, conditions.Health(1, 1), None), "T1")
    same = conditions.merge(first, conditions.compute(2, conditions.Health(1, 1), None), "T2")
    assert by_type(same)["Ready"]["lastTransitionTime"] == "T1"
    flipped = conditions.merge(same, conditions.compute(2, conditions.Health(1, 0), None), "T3")
    assert by_type(flipped)["Ready"]["lastTransitionTime"] == "T3"
