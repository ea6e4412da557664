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
        method, path, body = req.get("method", "GET"), req["path"], req.get("body")
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            if hasattr(api, "param_serialize"):  # clients generated since v31
                method, url, headers, body, post = api.param_serialize(
                    method=method, resource_path=path, header_params=headers,
                    body=body, auth_settings=["BearerToken"],
                )
                resp = api.call_api(method, url, header_params=headers, body=body, post_params=post)
                resp.read()
                status, data = resp.status, resp.data
            else:  # older clients
                resp = api.call_api(
                    path, method, header_params=headers, body=body,
                    auth_settings=["BearerToken"], _preload_content=False,
                )
                status, data = resp[1], resp[0].data
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
