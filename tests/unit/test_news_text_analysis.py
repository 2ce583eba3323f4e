from __future__ import annotations

import datetime as dt
import decimal

import pytest

from starkmatter.news import classifying, cleaning, entities, parsing, processing, sentiment

UNIVERSE = entities.Universe.load()
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def test_html_is_cleaned_of_tags_scripts_and_entities() -> None:
    raw = (
        "<p>Q4 &amp; FY <b>beat</b></p><script>alert(1)</script>"
        "<style>p{}</style><p>Next&nbsp;line</p>"
    )
    assert cleaning.clean_html(raw) == "Q4 & FY beat\nNext line"


def test_control_characters_are_removed_but_paragraphs_kept() -> None:
    assert cleaning.clean_html("a\x00b<br/>c\u200b") == "ab\nc"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Apple beats estimates and raises guidance", "positive"),
        ("Boeing halts deliveries after probe; shares fell sharply", "negative"),
        ("Intel is not expected to cut its dividend", "positive"),
        ("The company will hold its annual meeting on Tuesday", "neutral"),
    ],
)
def test_finance_sentiment_labels(text: str, label: str) -> None:
    assert sentiment.score(text).label == label


def test_sentiment_is_bounded_and_exact() -> None:
    result = sentiment.score("beat beat beat record surge " * 50)
    assert isinstance(result.score, decimal.Decimal)
    assert decimal.Decimal(0) < result.score < 1


def test_intensifier_weighs_more_than_plain_word() -> None:
    assert sentiment.score("shares fell sharply").score < sentiment.score("shares fell").score


@pytest.mark.parametrize(
    ("title", "category"),
    [
        ("Apple reports quarterly results, EPS beats estimates", "earnings"),
        ("Microsoft to acquire security firm in merger deal", "mna"),
        ("Morgan Stanley upgrades Nvidia, raises price target", "analyst_action"),
        ("SEC fines broker over compliance failures", "regulatory"),
        ("Fed signals interest rate cut as inflation cools", "macro"),
        ("Company opens new headquarters downtown", "other"),
    ],
)
def test_classification_of_headlines(title: str, category: str) -> None:
    assert classifying.classify(title, "") == category


def test_tickers_from_cashtags_exchange_references_and_names() -> None:
    text = "$TSLA fell while Apple rose; Microsoft (NASDAQ: MSFT) was flat. $ZZZZ is unknown."
    mentions = entities.extract(text, UNIVERSE)
    assert mentions.symbols == ("AAPL", "MSFT", "TSLA")
    assert mentions.companies == ("Apple Inc.", "Microsoft Corporation", "Tesla, Inc.")


def test_ambiguous_tickers_need_stronger_evidence_than_a_capitalised_word() -> None:
    assert entities.extract("IT spending and ALL sectors; T-bills rally", UNIVERSE).symbols == ()
    assert entities.extract("AT&T shares rose; $T gained", UNIVERSE).symbols == ("T",)
    assert entities.extract("NVDA and AMD rallied", UNIVERSE).symbols == ("AMD", "NVDA")


def test_content_hash_ignores_case_and_whitespace() -> None:
    assert processing.content_hash("Apple  Beats", "text\nhere") == processing.content_hash(
        "apple beats", "TEXT here"
    )
    assert processing.content_hash("a", "b") != processing.content_hash("a", "c")


def test_edgar_filer_is_matched_to_its_symbol_and_form_to_category() -> None:
    raw = parsing.RawArticle(
        url="https://www.sec.gov/x",
        title="8-K - APPLE INC. (0000320193) (Filer)",
        summary="Item 2.02: Results of Operations",
        body="",
        author=None,
        published_at=None,
        filing_form="8-K",
        filer="APPLE INC.",
    )
    article = processing.process(raw, UNIVERSE, now=NOW)
    assert article.symbols == ("AAPL",) and article.category == "earnings"
    assert article.published_at == NOW


def test_future_publication_dates_are_clamped_to_now() -> None:
    raw = parsing.RawArticle("http://x/1", "Title", "", "", None, NOW + dt.timedelta(days=3))
    assert processing.process(raw, UNIVERSE, now=NOW).published_at == NOW
