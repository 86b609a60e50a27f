"""An OTLP/HTTP trace sink for the benchmarks: it answers every export as a collector
does (200, an empty ``ExportTraceServiceResponse``) and counts the spans of each service,
in its own process, so what the services spend on traces is measured apart from what a
collector spends keeping them.

    python benchmarks/otlp_sink.py PORT

Runs on 127.0.0.1:PORT until SIGTERM, then prints the exports, bytes and spans it received.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

received = {"exports": 0, "bytes": 0}
spans: Counter[str] = Counter()
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest.FromString(body)
        with lock:
            received["exports"] += 1
            received["bytes"] += len(body)
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "?"
                )
                spans[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    by_service = ", ".join(f"{service} {count:,}" for service, count in sorted(spans.items())) or "none"
    print(f"{received['exports']} exports, {received['bytes']:,} bytes; spans: {by_service}", flush=True)


if __name__ == "__main__":
    main()
