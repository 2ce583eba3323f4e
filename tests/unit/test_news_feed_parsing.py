from __future__ import annotations

import datetime as dt

import pytest

from starkmatter.news import config, parsing, sampleserver


def test_rss_sample_parses_with_dates_and_tags() -> None:
    items = parsing.parse_feed((sampleserver.SAMPLES / "markets.rss").read_bytes())
    assert len(items) == 11
    first = items[0]
    assert first.url == "http://localhost/news/apple-q4-earnings"
    assert first.published_at == dt.datetime(2026, 11, 24, 21, 5, tzinfo=dt.UTC)
    assert first.symbols == ("AAPL",)


def test_edgar_atom_entries_carry_form_and_filer() -> None:
    items = parsing.parse_feed((sampleserver.SAMPLES / "edgar.atom").read_bytes())
    assert [(i.filing_form, i.filer) for i in items] == [
        ("8-K", "APPLE INC."),
        ("10-Q", "MICROSOFT CORP"),
        ("SC 13D", "TESLA, INC."),
    ]
    assert items[0].published_at == dt.datetime(2026, 11, 24, 21, 30, 12, tzinfo=dt.UTC)


def test_json_field_map_reads_nested_items_and_mixed_timestamps() -> None:
    items = parsing.parse_json(
        (sampleserver.SAMPLES / "wire.json").read_bytes(), sampleserver.WIRE_FIELD_MAP
    )
    assert [i.symbols for i in items] == [("JPM",), ("XOM",), ()]
    assert items[1].published_at == dt.datetime.fromtimestamp(1764007200, tz=dt.UTC)
    assert items[2].published_at == dt.datetime(2026, 11, 24, 13, 30, tzinfo=dt.UTC)


def test_json_without_the_mapped_list_is_a_feed_error() -> None:
    with pytest.raises(parsing.FeedError):
        parsing.parse_json(b'{"data": {}}', config.FieldMap(items="data.stories"))


def test_garbage_is_not_a_feed() -> None:
    with pytest.raises(parsing.FeedError):
        parsing.parse_feed(b"\x00\x01 definitely not xml")


def test_items_without_link_or_title_are_skipped() -> None:
    body = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>no link</title></item><item><link>http://x/2</link></item>
      <item><title>ok</title><link>http://x/3</link></item></channel></rss>"""
    assert [i.url for i in parsing.parse_feed(body)] == ["http://x/3"]
