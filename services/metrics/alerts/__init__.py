"""Alert rules with Prometheus semantics, SLO burn rates, JetStream events, Alertmanager."""
