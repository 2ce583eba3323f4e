"""Pure builders: a custom resource (as a dict) in, the child manifests it needs out."""
