from __future__ import annotations

import json

import pytest

from starkmatter_operator.builders import common, newssource
from tests.operator.crs import by_kind, make_cr, sample


def test_polling_source_becomes_a_cronjob_on_its_schedule(cfg):
    manifests = newssource.build(sample("NewsSource"), cfg)
    (cron,) = by_kind(manifests, "CronJob")
    assert by_kind(manifests, "Deployment") == []
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["news", "--source", "market-wire"]


def test_streaming_source_becomes_a_deployment(cfg):
    body = make_cr(
        "NewsSource", {"mode": "streaming", "format": "sse", "url": "https://n.example/sse"}
    )
    manifests = newssource.build(body, cfg)
    assert by_kind(manifests, "CronJob") == []
    (deploy,) = by_kind(manifests, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]


def test_suspended_streaming_source_scales_to_zero_and_polling_one_suspends(cfg):
    streaming = make_cr(
        "NewsSource",
        {"mode": "streaming", "format": "websocket", "url": "wss://n.example", "suspend": True},
    )
    assert by_kind(newssource.build(streaming, cfg), "Deployment")[0]["spec"]["replicas"] == 0
    polling = sample("NewsSource")
    polling["spec"]["suspend"] = True
    assert by_kind(newssource.build(polling, cfg), "CronJob")[0]["spec"]["suspend"] is True


def test_news_config_is_delivered_as_json(cfg):
    (cm,) = by_kind(newssource.build(sample("NewsSource"), cfg), "ConfigMap")
    assert json.loads(cm["data"]["news.json"])["categories"] == ["markets", "earnings"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "streaming", "format": "rss", "url": "https://x"}, "needs format sse"),
        ({"mode": "polling", "format": "sse", "url": "https://x"}, "needs format rss"),
        ({"mode": "streaming", "format": "websocket", "url": "https://x"}, "ws:// or wss://"),
        ({"format": "rss", "url": "ftp://x"}, "http:// or https://"),
        ({"url": "https://x", "schedule": "every minute"}, "must have 5 fields"),
        ({"url": "https://x", "schedule": "61 * * * *"}, "minute '61'"),
        ({"url": ""}, "spec.url is required"),
    ],
)
def test_newssource_the_operator_cannot_act_on_is_refused_with_a_reason(cfg, spec, message):
    with pytest.raises(common.InvalidSpec) as raised:
        newssource.build(make_cr("NewsSource", spec), cfg)
    assert message in str(raised.value)
