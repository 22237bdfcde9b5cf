"""``make demo-stack``: the exporter with Prometheus, the project's rules and Alertmanager."""
