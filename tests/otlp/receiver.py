#!/usr/bin/env python3
"""A loopback OTLP trace receiver for Remora's tests, built on the real
OpenTelemetry protobuf package (opentelemetry-proto) and, for OTLP/gRPC,
grpcio.

    python3 tests/otlp/receiver.py --protocol http   # POST /v1/traces (protobuf)
    python3 tests/otlp/receiver.py --protocol grpc   # TraceService/Export

Binds 127.0.0.1:0, prints `PORT <n>`, then one JSON line per span received:
trace_id, span_id, parent_span_id (hex), name, kind, flags, service (the
resource's service.name), attributes (a map) and status {code, message}.
Runs until killed.
"""

import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
out_lock = threading.Lock()


def value_of(any_value):
    which = any_value.WhichOneof("value")
    return getattr(any_value, which) if which else None


def emit(request):
    lines = []
    for rs in request.resource_spans:
        resource = {kv.key: value_of(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "trace_state": span.trace_state,
                    "name": span.name,
                    "kind": KINDS.get(span.kind, str(span.kind)),
                    "flags": span.flags,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "service": resource.get("service.name"),
                    "scope": ss.scope.name,
                    "attributes": {kv.key: value_of(kv.value) for kv in span.attributes},
                    "status": {"code": span.status.code, "message": span.status.message},
                }))
    with out_lock:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            return self.answer(404, b"", "text/plain")
        if self.headers.get("content-type") != "application/x-protobuf":
            return self.answer(415, b"want application/x-protobuf", "text/plain")
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # a malformed message is the test's failure
            return self.answer(400, str(e).encode(), "text/plain")
        emit(request)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.answer(200, reply, "application/x-protobuf")

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_http():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


def serve_grpc():
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            emit(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    args = parser.parse_args()
    serve_grpc() if args.protocol == "grpc" else serve_http()


if __name__ == "__main__":
    main()
