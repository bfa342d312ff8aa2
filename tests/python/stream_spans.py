"""Streams spans with the OpenTelemetry Python SDK until SIGTERM, and records which ones the
collector acknowledged.

Usage: stream_spans.py --endpoint URL --service NAME --acked FILE [--failed FILE] [--rate N]
                       [--timeout SECONDS]

Each span is named "work" and carries user.id = "u-<n>". After every export the SDK reports
as successful, the hex span ids of that batch are appended to the --acked file (one per line);
after every export that failed, a line is appended to the --failed file. On SIGTERM the SDK
flushes what it holds, then the script exits; failed exports are counted on stderr.
"""

import argparse
import signal
import sys
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult


class Recording:
    """Wraps an exporter; appends the span ids of every successful export to a file."""

    def __init__(self, inner, path, failed):
        self.inner, self.out, self.failures = inner, open(path, "a"), 0
        self.failed = open(failed, "a") if failed else None

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            for span in spans:
                self.out.write(f"{span.context.span_id:016x}\n")
            self.out.flush()
        else:
            self.failures += 1
            if self.failed:
                self.failed.write(f"{time.time():.3f} {result}\n")
                self.failed.flush()
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--acked", required=True)
    parser.add_argument("--failed")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=30, help="seconds an export may take")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    exporter = Recording(
        OTLPSpanExporter(endpoint=args.endpoint, insecure=True, timeout=args.timeout), args.acked, args.failed
    )
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100, max_export_batch_size=100))
    tracer = provider.get_tracer("e2e.stream")
    n = 0
    while not stop.is_set():
        with tracer.start_as_current_span("work") as span:
            span.set_attribute("user.id", f"u-{n}")
        n += 1
        time.sleep(1.0 / args.rate)
    provider.shutdown()
    print(f"sent={n} failed_exports={exporter.failures}", file=sys.stderr)


if __name__ == "__main__":
    main()
