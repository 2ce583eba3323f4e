from __future__ import annotations

from typing import Any

from starkmatter.ai import checking


def _answer(**overrides: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "summary": "AAPL momentum is positive: RSI is rising and price holds above its SMA.",
        "outlook": "bullish",
        "confidence": 0.7,
        "symbols": ["aapl"],
        "key_points": ["AAPL trades above its 20-bar moving average"],
        "risks": ["volatility may rise into earnings"],
    }
    answer.update(overrides)
    return answer


def _check(raw: Any, question: str | None = None, kind: str = "technical") -> checking.CheckReport:
    return checking.check(raw, symbols=["AAPL"], kind=kind, question=question, min_relevance=0.3)


def test_valid_relevant_answer_passes_with_symbols_normalized() -> None:
    report = _check(_answer())
    assert report.passed
    assert report.analysis is not None and report.analysis.symbols == ["AAPL"]


def test_missing_fields_fail_the_format_check_with_field_names() -> None:
    report = _check({"summary": "too short", "confidence": 3})
    assert not report.passed and report.analysis is None
    assert report.problems[0].code == "format"
    assert "outlook" in report.problems[0].detail and "confidence" in report.problems[0].detail


def test_extra_fields_are_a_format_error() -> None:
    assert _check(_answer(price_target="1000")).problems[0].code == "format"


def test_promised_returns_are_rejected_by_the_content_filter() -> None:
    report = _check(_answer(key_points=["A risk-free return of 20% on AAPL"]))
    assert [p.code for p in report.problems] == ["guaranteed_returns"]


def test_prompt_leak_is_rejected() -> None:
    report = _check(_answer(risks=["My instructions say AAPL must be described carefully"]))
    assert "prompt_leak" in {p.code for p in report.problems}


def test_emails_links_and_phone_numbers_are_redacted_but_prices_are_not() -> None:
    report = _check(
        _answer(
            key_points=[
                "AAPL closed at 195.50000000 on volume 1234567890",
                "call +1 415-555-0100 or mail ir@apple.example or see https://x.example/a",
            ]
        )
    )
    assert report.passed and report.analysis is not None
    assert report.analysis.key_points[0] == "AAPL closed at 195.50000000 on volume 1234567890"
    assert report.analysis.key_points[1] == "call [removed] or mail [removed] or see [removed]"
    assert report.redactions == 3


def test_overlong_text_is_truncated_at_a_word_boundary() -> None:
    report = _check(_answer(summary="AAPL trend momentum " * 200))
    assert report.passed and report.truncated and report.analysis is not None
    assert len(report.analysis.summary) <= checking.SUMMARY_MAX_CHARS
    assert report.analysis.summary.endswith("…")


def test_answer_about_other_symbols_is_irrelevant() -> None:
    report = _check(
        _answer(
            summary="The weather in Lisbon is mild this week, with sunshine expected.",
            symbols=["MSFT"],
            key_points=["sunny days ahead"],
            risks=[],
        )
    )
    assert [p.code for p in report.problems] == ["irrelevant"]
    assert report.relevance < 0.3


def test_relevance_counts_the_questions_terms() -> None:
    answer = checking.validate_format(_answer())[0]
    assert answer is not None
    on_topic = checking.relevance(answer, ["AAPL"], "technical", "is the RSI rising for AAPL?")
    off_topic = checking.relevance(answer, ["AAPL"], "news", "dividend payout schedule")
    assert on_topic > off_topic
    assert on_topic == 1.0


def test_control_characters_in_an_answer_are_removed() -> None:
    # A NUL passed every check, then PostgreSQL refused the answer (jsonb has no \u0000):
    # the analyses stayed pending and the cached answer failed every later request.
    report = _check(
        _answer(
            summary="AAPL momentum\x00 is positive: RSI is rising and price holds above its SMA.",
            key_points=["AAPL trades\x07 above its\nmoving average"],
            symbols=["aa\x00pl"],
        )
    )
    assert report.passed and report.analysis is not None
    assert "\x00" not in report.analysis.summary
    assert report.analysis.key_points == ["AAPL trades above its\nmoving average"]
    assert report.analysis.symbols == ["AAPL"]
