"""Everything Alibaba-specific: signing, credentials, the API client, its models and errors.

This package never imports prometheus_client; the exporter turns its hooks into metrics.
"""
