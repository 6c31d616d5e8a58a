"""Health, status, metrics and tracing for the worker process.

`health.HealthServer` serves `/livez`, `/readyz`, `/status`, `/` and `/metrics`;
`inflight.InFlightRegistry` (fed by `inflight.InFlightInterceptor`) knows what is running;
`metrics.Metrics` holds the Prometheus series; `tracing` sets up OpenTelemetry.
"""
