"""The operator counts its own apiserver requests by resource, so round trips per CR show."""

from __future__ import annotations

import pytest

from starkmatter_operator import metrics


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/apps/v1/namespaces/ns/deployments/feed-ingest", "deployments"),
        ("/apis/starkmatter.io/v1alpha1/namespaces/ns/marketfeeds/f/status", "marketfeeds/status"),
        ("/api/v1/namespaces/ns/secrets/starkmatter-redis", "secrets"),
        ("/api/v1/namespaces/ns/pods/archive-1-x/log", "pods/log"),
        ("/api/v1/namespaces/ns/configmaps", "configmaps"),
        ("/apis/kopf.dev/v1/clusterkopfpeerings/starkmatter", "clusterkopfpeerings"),
        ("/apis/monitoring.coreos.com/v1", "discovery"),
    ],
)
def test_request_paths_are_counted_by_resource_and_subresource(path, resource):
    assert metrics.resource_of(path) == resource
