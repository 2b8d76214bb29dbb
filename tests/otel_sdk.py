"""The OpenTelemetry SDK as the tests set it up: spans into an in-memory exporter,
metrics into an in-memory reader. test_telemetry reads them back; with
ASYNCCHAT_TEST_TELEMETRY=on, every suite records into them from the start."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()
_installed = False


def install() -> None:
    """Set the global providers, as an application does once at its start. Once a
    process: the API keeps the first provider it is given and only warns of another,
    so whichever suite comes first must set up the one that test_telemetry reads."""
    global _installed
    if _installed:
        return
    _installed = True
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
