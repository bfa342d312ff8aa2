"""Sends spans that the Actions of tests/tests/actions.rs change, with the OpenTelemetry
Python SDK over OTLP/gRPC.

Usage: send_action_spans.py --endpoint URL --service NAME

Spans: "GET" (server, http.request.method GET, url.path /users/123/orders/<uuid>, attributes
with an email, a card number, a JWT and a UUID inside text); "job-42-run" of the scope
"e2e.jobs". Exits non-zero if an export failed.
"""

import argparse
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


class Checked:
    def __init__(self, inner):
        self.inner, self.failures = inner, 0

    def export(self, batch, *args, **kwargs):
        result = self.inner.export(batch, *args, **kwargs)
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    args = parser.parse_args()

    exporter = Checked(OTLPSpanExporter(endpoint=args.endpoint, insecure=True))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    web = provider.get_tracer("e2e.web")
    with web.start_as_current_span("GET", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("url.path", "/users/123/orders/9f8e7d6c-5b4a-4392-8716-0a0b0c0d0e0f")
        span.set_attribute("http.response.status_code", 200)
        span.set_attribute("enduser.note", "mail bob@example.com, card 4111111111111111")
        span.set_attribute("auth.header", f"Bearer {JWT}")
        span.set_attribute("order.ref", "order 123e4567-e89b-12d3-a456-426614174000 shipped")

    jobs = provider.get_tracer("e2e.jobs")
    with jobs.start_as_current_span("job-42-run"):
        pass

    provider.shutdown()
    if exporter.failures:
        print(f"{exporter.failures} exports failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
