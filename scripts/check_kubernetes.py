#!/usr/bin/env python3
"""Checks of the Kubernetes manifests (deploy/kubernetes) that a schema and checkov cannot
make: probes on the admin port, the grace period against the shutdown grace, the spool on a
volume, the auth file from a Secret, no secret in the ConfigMap, worker threads against the CPU
limit, selectors, kustomization listings, checkov skips with reasons. Run by
scripts/check-deploy.sh with its venv's Python (PyYAML):

    check_kubernetes.py K8S_DIR WORK_DIR "LISTEN ADMIN KAFKA REDIS ports" RENDERED.yaml...
"""
import base64, os, re, sys
import yaml

root, work, ports, *rendered = sys.argv[1:]
listen_port, admin_port, kafka_port, redis_port = ports.split()
errors = []

# .checkov.yaml: every skip has its reason; no wildcard, no soft-fail.
checkov_cfg = os.path.join(root, ".checkov.yaml")
text = open(checkov_cfg).read()
for key in ("soft-fail", "soft-fail-on", "skip-framework", "skip-path", "skip-resources-without-violations"):
    if re.search(rf"^\s*{key}\s*:", text, re.M):
        errors.append(f"{checkov_cfg}: `{key}` is a blanket skip")
skips = yaml.safe_load(text).get("skip-check") or []
for line in re.findall(r"^\s*-\s*(CKV\S*.*)$", text, re.M):
    if not re.match(r"^CKV_[A-Z0-9]+_\d+\s+#\s*\S", line):
        errors.append(f"{checkov_cfg}: skip `{line.strip()}` needs one check id and `# reason`")
for s in skips:
    if not re.fullmatch(r"CKV_[A-Z0-9]+_\d+", str(s)):
        errors.append(f"{checkov_cfg}: skip-check {s!r} is not a single check id")
print(f"checkov skips (each with its reason in {checkov_cfg}): {', '.join(map(str, skips))}")

# Each kustomization lists every manifest beside it: none is left out of `kubectl apply -k`.
for dirpath, _, fnames in sorted(os.walk(root)):
    if "kustomization.yaml" in fnames:
        listed = set(yaml.safe_load(open(os.path.join(dirpath, "kustomization.yaml"))).get("resources") or [])
        for f in sorted(fnames):
            if f.endswith(".yaml") and not f.startswith(".") and f != "kustomization.yaml" and f not in listed:
                errors.append(f"{dirpath}/kustomization.yaml does not list {f}")

def check(path, variant, fs_root, env_out):
    def err(msg):
        errors.append(f"{variant}: {msg}")
    objs = {}
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        if "namespace" in doc.get("metadata", {}):
            err(f"{doc['kind']} sets a namespace (the manifests are namespace-agnostic)")
        if doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name") != "ackgate":
            err(f"{doc['kind']} {doc['metadata'].get('name')} lacks the label app.kubernetes.io/name: ackgate")
        objs.setdefault(doc["kind"], []).append(doc)
    workloads = objs.get("Deployment", []) + objs.get("StatefulSet", [])
    if len(workloads) != 1:
        return err(f"expected one Deployment or StatefulSet, found {len(workloads)}")
    dep = workloads[0]
    required = {dep["kind"], "Service", "PodDisruptionBudget", "ConfigMap", "Secret", "NetworkPolicy",
                "ServiceAccount"} | ({"HorizontalPodAutoscaler"} if dep["kind"] == "Deployment" else set())
    if required - objs.keys():
        return err(f"missing kinds: {sorted(required - objs.keys())}")
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    containers = [c for c in pod["containers"] if c["name"] == "ackgate"]
    if not containers:
        return err(f"{dep['kind']}: no container named ackgate")
    c = containers[0]

    def selects(selector, what):
        if not selector or not all(pod_labels.get(k) == v for k, v in selector.items()):
            err(f"{what} selector {selector} does not select the gateway's pods {pod_labels}")
    selects(dep["spec"]["selector"]["matchLabels"], dep["kind"])
    for svc in objs["Service"]:
        selects(svc["spec"].get("selector"), f"Service {svc['metadata']['name']}")
    for pdb in objs["PodDisruptionBudget"]:
        selects(pdb["spec"]["selector"].get("matchLabels"), f"PDB {pdb['metadata']['name']}")
    for np in objs["NetworkPolicy"]:
        selects(np["spec"]["podSelector"].get("matchLabels"), f"NetworkPolicy {np['metadata']['name']}")
    for t in pod.get("topologySpreadConstraints") or []:
        selects(t["labelSelector"].get("matchLabels"), f"topologySpreadConstraint {t['topologyKey']}")
    for hpa in objs.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != (dep["kind"], dep["metadata"]["name"]):
            err(f"HPA {hpa['metadata']['name']} scales {ref['kind']}/{ref['name']}, not the {dep['kind']}")
    if not pod.get("topologySpreadConstraints") and not pod.get("affinity", {}).get("podAntiAffinity"):
        err("no topologySpreadConstraints or podAntiAffinity")
    if dep["kind"] == "Deployment":
        rolling = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
        if (rolling.get("maxUnavailable"), rolling.get("maxSurge")) != (0, 1):
            err(f"rolling update should be maxUnavailable 0 / maxSurge 1, is {rolling}")
    elif dep["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") != "RollingUpdate":
        err("the StatefulSet's updateStrategy is not RollingUpdate")

    # Security context (pod-level values count where Kubernetes lets the container inherit them).
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    def either(key):
        return csc.get(key, psc.get(key))
    if either("runAsNonRoot") is not True:
        err("ackgate container: runAsNonRoot is not true")
    if csc.get("readOnlyRootFilesystem") is not True:
        err("ackgate container: readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        err("ackgate container: allowPrivilegeEscalation is not false")
    if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
        err("ackgate container: capabilities do not drop ALL")
    if (either("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err("ackgate container: seccompProfile is not RuntimeDefault")
    image = c["image"]
    if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        err(f"ackgate container: image {image} is not pinned by a tag or digest (nor `latest`)")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                err(f"ackgate container: no resources.{kind}.{r}")

    # The environment the gateway sees: the ConfigMaps it reads, then its env (which wins).
    configmaps = {cm["metadata"]["name"]: cm for cm in objs["ConfigMap"]}
    secrets = {s["metadata"]["name"]: s for s in objs["Secret"]}
    env = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if name not in configmaps:
                err(f"ackgate container: envFrom ConfigMap {name} does not exist")
            env.update((configmaps.get(name) or {}).get("data") or {})
        elif "secretRef" in src:
            err("ackgate container: envFrom secretRef: name the Secret's keys one by one")
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            s = secrets.get(ref["name"])
            if s is None or ref["key"] not in {**(s.get("data") or {}), **(s.get("stringData") or {})}:
                err(f"ackgate container: env {e['name']} from Secret {ref['name']} key {ref['key']}, which does not exist")
            env[e["name"]] = "<secret>"

    def secret_value(s, key):
        if key in (s.get("stringData") or {}):
            return s["stringData"][key]
        return base64.b64decode(s["data"][key]).decode()

    # Secure by default.
    args = " ".join(c.get("command", []) + c.get("args", []))
    if "--no-auth" in args or str(env.get("ACKGATE_NO_AUTH", "false")).lower() not in ("false", "0", ""):
        err("ackgate container: serves without authentication (--no-auth / ACKGATE_NO_AUTH)")

    # Worker threads = the CPU limit.
    cpu = str((res.get("limits") or {}).get("cpu", ""))
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu or 0)
    threads = env.get("ACKGATE_WORKER_THREADS")
    if threads is None or not cores.is_integer() or int(threads) != int(cores):
        err(f"ACKGATE_WORKER_THREADS={threads} does not match the CPU limit {cpu!r} (a whole number of cores)")

    # The worst case of bodies in flight fits the memory limit (README, "Settings").
    def quantity(q):
        m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(q))
        return int(m.group(1)) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    def setting(name, default):
        return int(env.get(name, default))
    worst = (setting("ACKGATE_MAX_IN_FLIGHT", 2048) * setting("ACKGATE_MAX_BODY_BYTES", 1048576)
             + setting("ACKGATE_MAX_BATCHES_IN_FLIGHT", 64) * setting("ACKGATE_MAX_BATCH_BYTES", 16777216))
    mem = quantity((res.get("limits") or {}).get("memory", "0"))
    if worst >= mem:
        err(f"bodies in flight may take {worst >> 20} MiB, not below the memory limit of {mem >> 20} MiB")

    # terminationGracePeriodSeconds > preStop sleep + the shutdown grace.
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    sleep = None
    if "sleep" in pre:
        sleep = int(pre["sleep"]["seconds"])
    elif "exec" in pre:
        cmd = pre["exec"]["command"]
        if len(cmd) == 2 and os.path.basename(cmd[0]) == "sleep":
            sleep = float(cmd[1])
    if sleep is None:
        err(f"ackgate container: preStop should sleep (exec sleep N or sleep.seconds), is {pre}")
        sleep = 0
    grace_s = setting("ACKGATE_SHUTDOWN_GRACE_MS", 35000) / 1000
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > sleep + grace_s:
        err(f"terminationGracePeriodSeconds {tgps} must exceed the preStop sleep {sleep:g} s + "
            f"ACKGATE_SHUTDOWN_GRACE_MS {grace_s:g} s (then the producer flush)")
    else:
        print(f"{variant}: terminationGracePeriodSeconds {tgps} > preStop {sleep:g} s + shutdown grace {grace_s:g} s")

    # Probes: /readyz and /healthz on the admin port, which is not the client port.
    def port_of(addr):
        return int(str(addr).rsplit(":", 1)[-1])
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    admin = env.get("ACKGATE_ADMIN_LISTEN")
    if not admin:
        err("ACKGATE_ADMIN_LISTEN is not set: probes and metrics would share the client port")
    else:
        if port_of(admin) == port_of(env.get("ACKGATE_LISTEN", "0.0.0.0:8080")):
            err("ACKGATE_ADMIN_LISTEN and ACKGATE_LISTEN use the same port")
        for probe, want in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                err(f"ackgate container: no {probe}.httpGet")
                continue
            port = ports.get(get["port"], get["port"])
            if get.get("path") != want or port != port_of(admin):
                err(f"{probe}: {get.get('path')} on port {port}; expected {want} on the admin port {port_of(admin)}")
            else:
                print(f"{variant}: {probe} {want} on the admin port {port}")

    # Files: the spool on a writable volume, the auth file from a Secret, read-only.
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for claim in dep["spec"].get("volumeClaimTemplates") or []:
        if claim["metadata"]["name"] in volumes:
            err(f"volume {claim['metadata']['name']} is both a pod volume and a claim template")
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": claim}
    mounts = c.get("volumeMounts") or []
    def mount_of(path):
        best = None
        for m in mounts:
            mp = m["mountPath"].rstrip("/")
            if path.startswith(mp + "/") and (best is None or len(mp) > len(best["mountPath"].rstrip("/"))):
                best = m
        return best
    spool = env.get("ACKGATE_FAILURE_SPOOL_PATH", "ackgate-failures.spool")
    m = mount_of(spool) if spool.startswith("/") else None
    if m is None:
        err(f"ACKGATE_FAILURE_SPOOL_PATH {spool} is on no mounted volume (the root filesystem is read-only)")
    elif m["name"] not in volumes:
        err(f"volume {m['name']} (the spool's) is not defined")
    elif m.get("readOnly") or not ({"emptyDir", "persistentVolumeClaim", "ephemeral"} & volumes[m["name"]].keys()):
        err(f"ACKGATE_FAILURE_SPOOL_PATH {spool}: volume {m['name']} is read-only or not an emptyDir/PVC/ephemeral volume")
    else:
        kind = next(k for k in volumes[m["name"]] if k != "name")
        print(f"{variant}: spool {spool} on volume {m['name']} ({kind}), writable")
    os.makedirs(fs_root + os.path.dirname(spool), exist_ok=True)

    for var in ("ACKGATE_AUTH_FILE", "ACKGATE_KAFKA_PROPERTIES_FILE"):
        path = env.get(var)
        if path is None:
            if var == "ACKGATE_AUTH_FILE":
                err("ACKGATE_AUTH_FILE is not set (`ackgate serve` refuses to start without authentication)")
            continue
        m = mount_of(path)
        vol = volumes.get(m["name"], {}) if m else {}
        if not m or "secret" not in vol or not m.get("readOnly"):
            err(f"{var} {path} is not on a read-only mount of a Secret")
            continue
        s = secrets.get(vol["secret"]["secretName"])
        rel = os.path.relpath(path, m["mountPath"])
        items = vol["secret"].get("items")
        key = next((i["key"] for i in items if i["path"] == rel), None) if items else rel
        if s is None or key is None:
            err(f"{var} {path}: not in Secret {vol['secret']['secretName']} as mounted")
            continue
        # Laid out as in the pod, for the `ackgate serve` run that follows.
        os.makedirs(os.path.dirname(fs_root + path), exist_ok=True)
        with open(fs_root + path, "w") as f:
            f.write(secret_value(s, key))
        print(f"{variant}: {var} {path}: Secret {s['metadata']['name']} key {key}, read-only")

    # No secret in a ConfigMap.
    for name, cm in configmaps.items():
        for k, v in (cm.get("data") or {}).items():
            v = str(v)
            if k in ("ACKGATE_REDIS_URL", "ACKGATE_KAFKA_PROPERTIES") or re.search(
                    r"PASSWORD|SECRET|TOKEN|CREDENTIAL|JAAS|SASL", k, re.I):
                err(f"ConfigMap {name}: {k} may carry a secret; put it in the Secret")
            if re.search(r"://[^/\s@:]*:[^/\s@]*@", v) or re.search(
                    r"(password|secret|token|jaas|credentials?)\s*[=:]", v, re.I):
                err(f"ConfigMap {name}: the value of {k} looks like it holds a secret")

    # The environment `ackgate serve` gets in the pod, with files under fs_root and this
    # machine's addresses (nothing listens on the Kafka and Redis ports: it starts, not ready).
    env.update({
        "ACKGATE_LISTEN": f"127.0.0.1:{listen_port}",
        "ACKGATE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "ACKGATE_KAFKA_BROKERS": f"127.0.0.1:{kafka_port}",
        "ACKGATE_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
    })
    for k, v in env.items():
        if k.endswith(("_PATH", "_FILE")) and str(v).startswith("/"):
            env[k] = fs_root + v
    with open(env_out, "w") as f:
        for k, v in sorted(env.items()):
            if "\n" in str(v):
                return err(f"{k}: a value with a newline")
            f.write(f"{k}={v}\n")
    print(f"{variant}: {sum(map(len, objs.values()))} objects: {', '.join(sorted(objs))}")

for path in rendered:
    variant = os.path.basename(path)[len("k8s-"):-len(".yaml")]
    check(path, variant, os.path.join(work, f"k8s-root-{variant}"), os.path.join(work, f"k8s-{variant}.env"))
for line in errors:
    print("  " + line)
if errors:
    sys.exit(f"{root}: {len(errors)} problem(s)")
print("no problems")
