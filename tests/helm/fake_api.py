#!/usr/bin/env python3
"""A minimal Kubernetes API server for `helm template --dry-run=server`,
so the chart's `lookup` calls can be tested without a cluster.

    fake_api.py SECRETS.yaml PORT_FILE RELEASE NAMESPACE

Serves, on 127.0.0.1 (port 0, written to PORT_FILE): /version, the legacy
discovery documents (/api, /api/v1, /apis, /apis/GROUP/VERSION) for the
kinds the chart renders, and GET of each Secret in SECRETS.yaml (any YAML
stream: the Secrets are picked out) at
/api/v1/namespaces/NS/secrets/NAME, with the annotations Helm puts on
the objects of release RELEASE in NAMESPACE (as after `helm install`);
anything else is a 404 Status. These
are recorded shapes of the real API's answers, reduced to the fields
client-go reads. Each request is logged to stderr. Stops on SIGTERM.
"""
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

# group/version -> [(resource, kind, namespaced)]
RESOURCES = {
    "v1": [("secrets", "Secret", True), ("configmaps", "ConfigMap", True),
           ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
           ("namespaces", "Namespace", False), ("pods", "Pod", True)],
    "apps/v1": [("deployments", "Deployment", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "admissionregistration.k8s.io/v1": [("mutatingwebhookconfigurations",
                                         "MutatingWebhookConfiguration", False)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
}


def resource_list(gv):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": [{"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k,
                           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                          for r, k, ns in RESOURCES[gv]]}


def group_list():
    groups = []
    for gv in RESOURCES:
        if "/" in gv:
            g, v = gv.split("/")
            ver = {"groupVersion": gv, "version": v}
            groups.append({"name": g, "versions": [ver], "preferredVersion": ver})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def main():
    secrets = {}
    with open(sys.argv[1]) as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc.get("kind") == "Secret":
                m = doc["metadata"]
                m.setdefault("annotations", {}).update({
                    "meta.helm.sh/release-name": sys.argv[3],
                    "meta.helm.sh/release-namespace": sys.argv[4]})
                secrets[f"/api/v1/namespaces/{m['namespace']}/secrets/{m['name']}"] = doc

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            sys.stderr.write(f"fake_api: GET {path}\n")
            if path == "/version":
                return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                        "platform": "linux/amd64"})
            if path == "/api":
                return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": []})
            if path == "/apis":
                return self.reply(200, group_list())
            if path == "/api/v1":
                return self.reply(200, resource_list("v1"))
            if path.startswith("/apis/") and path[len("/apis/"):] in RESOURCES:
                return self.reply(200, resource_list(path[len("/apis/"):]))
            if path in secrets:
                return self.reply(200, secrets[path])
            return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "message": f"{path} not found", "code": 404})

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(sys.argv[2], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
