// Streams spans with the OpenTelemetry Node.js SDK until SIGTERM, and records which ones the
// collector acknowledged.
//
// Usage: node stream_spans.js --endpoint URL --service NAME --acked FILE [--failed FILE]
//        [--rate N] [--timeout SECONDS]
//
// Each span is named "work" and carries user.id = "u-<n>". After every export the SDK reports
// as successful, the hex span ids of that batch are appended to the --acked file (one per
// line); after every export that failed, a line is appended to the --failed file. On SIGTERM
// the SDK flushes what it holds, then the script exits; failed exports are counted on stderr.

const fs = require('fs');
const { TracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0 || at + 1 >= process.argv.length) {
    if (fallback === undefined) throw new Error(`--${name} is required`);
    return fallback;
  }
  return process.argv[at + 1];
}

/** Wraps an exporter; appends the span ids of every successful export to a file. */
class Recording {
  constructor(inner, path, failed) {
    this.inner = inner;
    this.path = path;
    this.failed = failed;
    this.failures = 0;
  }

  export(spans, done) {
    this.inner.export(spans, (result) => {
      if (result.code === 0) {
        fs.appendFileSync(this.path, spans.map((s) => `${s.spanContext().spanId}\n`).join(''));
      } else {
        this.failures += 1;
        if (this.failed) {
          fs.appendFileSync(this.failed, `${Date.now() / 1000} ${result.error}\n`);
        }
      }
      done(result);
    });
  }

  shutdown() {
    return this.inner.shutdown();
  }

  forceFlush() {
    return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve();
  }
}

const exporter = new Recording(
  new OTLPTraceExporter({
    url: option('endpoint'),
    timeoutMillis: 1000 * Number(option('timeout', '30')),
  }),
  option('acked'),
  option('failed', ''),
);
const provider = new TracerProvider({
  resource: resourceFromAttributes({ 'service.name': option('service') }),
  spanProcessors: [
    new BatchSpanProcessor({ exporter, scheduledDelayMillis: 100, maxExportBatchSize: 100 }),
  ],
});
const tracer = provider.getTracer('e2e.stream');
let n = 0;
const timer = setInterval(() => {
  tracer.startSpan('work', { attributes: { 'user.id': `u-${n}` } }).end();
  n += 1;
}, 1000 / Number(option('rate', '200')));

process.on('SIGTERM', async () => {
  clearInterval(timer);
  await provider.shutdown();
  process.stderr.write(`sent=${n} failed_exports=${exporter.failures}\n`);
  process.exit(0);
});
