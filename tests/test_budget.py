import pytest

from orpheus_trio._policy.budget import RetryBudget


def test_floor_allows_a_few_extras_with_no_traffic() -> None:
    budget = RetryBudget(0.1, window_s=10.0, min_extra=2)
    assert budget.available(0.0) == 2
    assert budget.try_spend(0.0)
    assert budget.try_spend(0.5)
    assert not budget.try_spend(1.0)


def test_ten_percent_of_requests_in_window() -> None:
    budget = RetryBudget(0.1, window_s=10.0, min_extra=0)
    for i in range(30):
        budget.record_request(i * 0.1)
    assert budget.available(3.0) == 3
    assert [budget.try_spend(3.0) for _ in range(4)] == [True, True, True, False]


def test_requests_and_spends_age_out_of_the_window() -> None:
    budget = RetryBudget(0.5, window_s=10.0, min_extra=0)
    budget.record_request(0.0)
    budget.record_request(0.0)
    assert budget.try_spend(1.0)
    assert budget.available(1.0) == 0
    # at t=10 the requests at t=0 are gone; the spend at t=1 still counts
    budget.record_request(10.0)
    budget.record_request(10.0)
    assert budget.available(10.0) == 0
    assert budget.available(11.0) == 1


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(1.5)
    with pytest.raises(ValueError, match="window_s"):
        RetryBudget(0.1, window_s=0)
    with pytest.raises(ValueError, match="min_extra"):
        RetryBudget(0.1, min_extra=-1)
