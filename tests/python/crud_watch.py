"""CRUD and watch through one lab apiserver with the official Python client.

Usage: crud_watch.py NAMESPACE RESOURCE_API_VERSION
  (KUBECONFIG points at one node; RESOURCE_API_VERSION is the resource.k8s.io version the
  node serves, e.g. v1beta2 on 1.33, v1 on 1.36.)

For configmaps, pods (typed CoreV1Api), deployments (typed AppsV1Api) and resourceclaims
(CustomObjectsApi): create, get, list, replace, watch from the list's resourceVersion
(expects MODIFIED), delete, watch again (expects DELETED). Prints `ok <kind> <step>` per
step; exits 1 with the reason on the first failure.
"""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

WATCH_BOUND_SECONDS = 30  # an upper bound for a stream, not a timing assertion


def fail(msg):
    print(f"FAIL {msg}", flush=True)
    sys.exit(1)


def ok(kind, step):
    print(f"ok {kind} {step}", flush=True)


def expect_event(kind, list_fn, rv, name, want_type, **kw):
    w = watch.Watch()
    seen = []
    for ev in w.stream(list_fn, resource_version=rv, timeout_seconds=WATCH_BOUND_SECONDS, **kw):
        obj = ev["object"]
        meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
        ev_name = meta["name"] if isinstance(meta, dict) else meta.name
        seen.append((ev["type"], ev_name))
        if ev_name == name and ev["type"] == want_type:
            w.stop()
            ok(kind, f"watch {want_type}")
            return
    fail(f"{kind}: no {want_type} event for {name} from rv {rv}; saw {seen}")


def name_of(obj):
    return obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name


def rv_of(obj):
    return obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version


def exercise(kind, ns, create, get, lst, replace, delete, mutate, check):
    name = f"pyt-{kind}"
    created = create()
    if name_of(created) != name:
        fail(f"{kind}: created {name_of(created)}, wanted {name}")
    ok(kind, "create")
    got = get(name)
    if not check(got, False):
        fail(f"{kind}: get returned unexpected object {got}")
    ok(kind, "get")
    listed = lst()
    items = listed["items"] if isinstance(listed, dict) else listed.items
    if name not in [name_of(i) for i in items]:
        fail(f"{kind}: list does not contain {name}")
    rv = listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version
    ok(kind, "list")
    mutate(got)
    replaced = replace(name, got)
    if not check(replaced, True):
        fail(f"{kind}: replace did not take: {replaced}")
    if rv_of(replaced) == rv_of(got):
        fail(f"{kind}: resourceVersion did not change on replace")
    ok(kind, "replace")
    if not check(get(name), True):
        fail(f"{kind}: get after replace shows the old object")
    list_fn, _, kw = watch_args[kind](rv)
    expect_event(kind, list_fn, rv, name, "MODIFIED", **kw)
    listed = lst()
    rv = listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version
    delete(name)
    ok(kind, "delete")
    try:
        get(name)
        fail(f"{kind}: {name} still there after delete")
    except ApiException as e:
        if e.status != 404:
            fail(f"{kind}: get after delete: HTTP {e.status}, wanted 404")
    ok(kind, "get-after-delete 404")
    expect_event(kind, list_fn, rv, name, "DELETED", **kw)


watch_args = {}


def main():
    ns, rapi = sys.argv[1], sys.argv[2]
    config.load_kube_config()
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    custom = client.CustomObjectsApi()

    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    except ApiException as e:
        if e.status != 409:
            fail(f"create namespace {ns}: HTTP {e.status} {e.body}")
    ok("namespace", "create")

    # configmaps
    watch_args["configmap"] = lambda rv: (core.list_namespaced_config_map, rv, {"namespace": ns})
    exercise(
        "configmap", ns,
        create=lambda: core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="pyt-configmap"), data={"a": "1"})),
        get=lambda n: core.read_namespaced_config_map(n, ns),
        lst=lambda: core.list_namespaced_config_map(ns),
        replace=lambda n, o: core.replace_namespaced_config_map(n, ns, o),
        delete=lambda n: core.delete_namespaced_config_map(n, ns),
        mutate=lambda o: o.data.update({"a": "2"}),
        check=lambda o, after: o.data == {"a": "2" if after else "1"},
    )

    # pods
    watch_args["pod"] = lambda rv: (core.list_namespaced_pod, rv, {"namespace": ns})
    exercise(
        "pod", ns,
        create=lambda: core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name="pyt-pod", labels={"app": "pyt"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))),
        get=lambda n: core.read_namespaced_pod(n, ns),
        lst=lambda: core.list_namespaced_pod(ns),
        replace=lambda n, o: core.replace_namespaced_pod(n, ns, o),
        delete=lambda n: core.delete_namespaced_pod(n, ns),
        mutate=lambda o: o.metadata.labels.update({"step": "replaced"}),
        check=lambda o, after: o.spec.containers[0].image == "busybox"
        and (o.metadata.labels.get("step") == "replaced") == after,
    )

    # deployments
    watch_args["deployment"] = lambda rv: (apps.list_namespaced_deployment, rv, {"namespace": ns})
    labels = {"app": "pyt-deployment"}
    exercise(
        "deployment", ns,
        create=lambda: apps.create_namespaced_deployment(ns, client.V1Deployment(
            metadata=client.V1ObjectMeta(name="pyt-deployment"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]))))),
        get=lambda n: apps.read_namespaced_deployment(n, ns),
        lst=lambda: apps.list_namespaced_deployment(ns),
        replace=lambda n, o: apps.replace_namespaced_deployment(n, ns, o),
        delete=lambda n: apps.delete_namespaced_deployment(n, ns),
        mutate=lambda o: setattr(o.spec, "replicas", 3),
        check=lambda o, after: o.spec.replicas == (3 if after else 1),
    )

    # resourceclaims (resource.k8s.io, a non-core group whose preferred version moved)
    g = "resource.k8s.io"
    watch_args["resourceclaim"] = lambda rv: (
        custom.list_namespaced_custom_object, rv,
        {"group": g, "version": rapi, "namespace": ns, "plural": "resourceclaims"})
    claim = {
        "apiVersion": f"{g}/{rapi}", "kind": "ResourceClaim",
        "metadata": {"name": "pyt-resourceclaim", "labels": {"step": "created"}},
        "spec": {"devices": {"requests": [{"name": "gpu"}]}},
    }
    exercise(
        "resourceclaim", ns,
        create=lambda: custom.create_namespaced_custom_object(g, rapi, ns, "resourceclaims", claim),
        get=lambda n: custom.get_namespaced_custom_object(g, rapi, ns, "resourceclaims", n),
        lst=lambda: custom.list_namespaced_custom_object(g, rapi, ns, "resourceclaims"),
        replace=lambda n, o: custom.replace_namespaced_custom_object(g, rapi, ns, "resourceclaims", n, o),
        delete=lambda n: custom.delete_namespaced_custom_object(g, rapi, ns, "resourceclaims", n),
        mutate=lambda o: o["metadata"]["labels"].update({"step": "replaced"}),
        check=lambda o, after: o["apiVersion"] == f"{g}/{rapi}"
        and o["metadata"]["labels"]["step"] == ("replaced" if after else "created"),
    )
    print("ALL OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ApiException as e:
        fail(f"unexpected HTTP {e.status} {e.reason}: {e.body}")
