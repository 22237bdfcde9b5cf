"""Prometheus exporter for Alibaba Cloud ECS Cloud Assistant invocation results."""

__version__ = "0.1.0"
