"""Sends a known set of traces, metrics and logs with the OpenTelemetry Python SDK.

Usage: send_telemetry.py --protocol grpc|http --endpoint URL --service NAME

Spans: "checkout" (x3, attributes user.email, http.route, cart.items) and "healthcheck" (x2);
metric: counter "orders" incremented 3 times by 2, attribute payment=card;
logs: 2 records "order placed" with attribute order.id.
Exits non-zero if any export reported failure.
"""

import argparse
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            OTLPMetricExporter(endpoint=endpoint, insecure=True),
            OTLPLogExporter(endpoint=endpoint, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return (
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
    )


class Checked:
    """Wraps an exporter and remembers whether every export succeeded."""

    def __init__(self, inner, success):
        self.inner, self.success, self.failures = inner, success, 0

    def export(self, batch, *args, **kwargs):
        result = self.inner.export(batch, *args, **kwargs)
        if result != self.success:
            self.failures += 1
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    args = parser.parse_args()

    resource = Resource.create({"service.name": args.service, "deployment.environment": "e2e"})
    span_exporter, metric_exporter, log_exporter = exporters(args.protocol, args.endpoint)
    span_exporter = Checked(span_exporter, SpanExportResult.SUCCESS)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("e2e.tracer", "1.2.3")
    for i in range(3):
        with tracer.start_as_current_span("checkout") as span:
            span.set_attribute("user.email", f"user{i}@example.com")
            span.set_attribute("http.route", "/cart/checkout")
            span.set_attribute("cart.items", i + 1)
    for _ in range(2):
        with tracer.start_as_current_span("healthcheck") as span:
            span.set_attribute("http.route", "/healthz")
    tracer_provider.shutdown()

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    orders = meter_provider.get_meter("e2e.meter").create_counter("orders", unit="1", description="orders placed")
    for _ in range(3):
        orders.add(2, {"payment": "card"})
    metrics = reader.get_metrics_data()
    metric_result = metric_exporter.export(metrics)
    metric_exporter.shutdown()
    meter_provider.shutdown()

    log_exporter = Checked(log_exporter, None)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter.inner))
    logger = logging.getLogger("e2e.logger")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    for i in range(2):
        logger.warning("order placed", extra={"order.id": str(100 + i)})
    logger_provider.shutdown()

    failed = span_exporter.failures or metric_result != MetricExportResult.SUCCESS
    print(f"spans_failed={span_exporter.failures} metrics={metric_result}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
