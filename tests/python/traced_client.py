"""An HTTP client instrumented with the OpenTelemetry Python SDK: its CLIENT span's context goes
out in a `traceparent` header, as the SDK's HTTP instrumentations send it.

Usage: traced_client.py OTLP_GRPC_ENDPOINT URL
Prints `trace TRACE_ID span SPAN_ID status CODE` and exports the span before exiting.
"""

import sys
import urllib.error
import urllib.request

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

endpoint, url = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": "sdk-client"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
tracer = provider.get_tracer("traced_client")

with tracer.start_as_current_span("GET", kind=trace.SpanKind.CLIENT) as span:
    headers = {}
    propagate.inject(headers)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    context = span.get_span_context()
provider.shutdown()
print(f"trace {context.trace_id:032x} span {context.span_id:016x} status {status}", flush=True)
