"""Send raw requests through one lab apiserver with the official Python client's transport
(its TLS, client cert or token from KUBECONFIG), and report what came back.

stdin: a JSON list of {"method": "GET", "path": "/apis/...", "body": {...} or null}
stdout: a JSON list of {"status": 200, "body": <parsed JSON or text>} in the same order.
"""
import json
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def main():
    config.load_kube_config()
    api = client.ApiClient()
    out = []
    for req in json.load(sys.stdin):
        try:
            method, url, headers, body, post = api.param_serialize(
                method=req.get("method", "GET"),
                resource_path=req["path"],
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=req.get("body"),
                auth_settings=["BearerToken"],
            )
            resp = api.call_api(method, url, header_params=headers, body=body, post_params=post)
            resp.read()
            status, data = resp.status, resp.data
        except ApiException as e:
            status, data = e.status, e.body
        text = data.decode() if isinstance(data, bytes) else (data or "")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        out.append({"status": status, "body": body})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
