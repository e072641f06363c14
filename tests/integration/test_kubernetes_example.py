# SPDX-License-Identifier: MIT
"""examples/kubernetes.yaml agrees with itself and with the daemon.

There is no cluster here, so this checks what can be checked without one:
the file parses as YAML (python3-yaml) into a ConfigMap, a Deployment and a
Service; the real ringechod accepts the ConfigMap's ringechod.conf (-t) and
serves with it; the container's `-c` names the file where the ConfigMap is
mounted; the config's listen port is the container port the probes and the
Service's targetPort name; the selectors match the pod's labels; the pod is
locked down as the comments say; and the shutdown budget (preStop +
shutdown_timeout_ms + 1 s) fits in terminationGracePeriodSeconds.
"""

import os
import re
import sys
import tempfile
import unittest

import harness
from harness import CheckedTestCase

try:
    import yaml
except ImportError:
    sys.stderr.write("skipping: python3-yaml is not installed (scripts/deps test installs it)\n")
    sys.exit(77)

harness.exit_77_unless_io_uring()

SOURCE_DIR = os.environ.get("RINGECHO_SOURCE_DIR") or \
    os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "kubernetes.yaml")
CONF_KEY = "ringechod.conf"


def load():
    """{kind: document} of the example; each kind exactly once."""
    with open(EXAMPLE) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    kinds = [d["kind"] for d in docs]
    if sorted(kinds) != ["ConfigMap", "Deployment", "Service"]:
        raise AssertionError("expected a ConfigMap, a Deployment and a Service, got %s" % kinds)
    return {d["kind"]: d for d in docs}


class KubernetesExampleTest(CheckedTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.docs = load()
        cls.cm, cls.dep, cls.svc = (cls.docs[k] for k in ("ConfigMap", "Deployment", "Service"))
        cls.pod = cls.dep["spec"]["template"]["spec"]
        containers = cls.pod["containers"]
        assert len(containers) == 1, "one container expected"
        cls.ctr = containers[0]
        cls.conf = cls.cm["data"][CONF_KEY]

    def conf_file(self):
        fd, path = tempfile.mkstemp(prefix="ringechod-k8s-", suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(self.conf)
        self.addCleanup(os.unlink, path)
        return path

    def conf_int(self, key, default=None):
        """key's value in the ConfigMap's config, else default (the daemon's)."""
        m = re.search(r"^\s*%s\s*=\s*(\d+)\s*;" % key, self.conf, re.M)
        if m is None and default is None:
            self.fail("%s not set in the ConfigMap's config" % key)
        return int(m.group(1)) if m else default

    def echo_port(self):
        """The container port's number, by the name the probes use."""
        ports = {p["name"]: p for p in self.ctr["ports"]}
        self.assertEqual(ports["echo"]["protocol"], "TCP")
        return ports["echo"]["containerPort"]

    def test_daemon_accepts_and_serves_the_configmap_config(self):
        path = self.conf_file()
        p = harness.run_daemon(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, "ringechod -t rejects the ConfigMap's config:\n"
                         + p.stderr)
        # The same file, serving (only the address moved to loopback).
        d = self.start(args=["-c", path, "-l", "127.0.0.1:0"], no_config=True)
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"pod says hello\n"), b"pod says hello\n")
        s.close()
        self.stop_clean(d)

    def test_config_is_mounted_where_the_container_reads_it(self):
        args = self.ctr["args"]
        self.assertEqual(args[0], "-c")
        mounts = {m["name"]: m for m in self.ctr["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        name, mount = next((n, m) for n, m in mounts.items()
                           if "configMap" in volumes[n])
        self.assertEqual(volumes[name]["configMap"]["name"], self.cm["metadata"]["name"])
        self.assertTrue(mount.get("readOnly"))
        self.assertEqual(args[1], os.path.join(mount["mountPath"], CONF_KEY))

    def test_ports_agree(self):
        m = re.search(r'^\s*listen\s*=\s*\[\s*"0\.0\.0\.0:(\d+)"\s*\]\s*;', self.conf, re.M)
        self.assertIsNotNone(m, "the config does not listen on 0.0.0.0")
        port = int(m.group(1))
        self.assertEqual(self.echo_port(), port)
        self.assertGreaterEqual(port, 1024, "a port below 1024 needs a capability")
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(self.ctr[probe]["tcpSocket"]["port"], "echo", probe)
        svc_ports = self.svc["spec"]["ports"]
        self.assertEqual([(p["protocol"], p["port"], p["targetPort"]) for p in svc_ports],
                         [("TCP", 7, "echo")])

    def test_selectors_match_the_pods(self):
        labels = self.dep["spec"]["template"]["metadata"]["labels"]
        for selector in (self.dep["spec"]["selector"]["matchLabels"],
                         self.svc["spec"]["selector"]):
            self.assertTrue(selector.items() <= labels.items(), selector)

    def test_pod_is_locked_down(self):
        pod_sc, sc = self.pod["securityContext"], self.ctr["securityContext"]
        self.assertIs(pod_sc["runAsNonRoot"], True)
        self.assertNotEqual(pod_sc["runAsUser"], 0)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["privileged"], False)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", sc["capabilities"])
        self.assertEqual(pod_sc["seccompProfile"]["type"], "RuntimeDefault")
        resources = self.ctr["resources"]
        self.assertIn("cpu", resources["requests"])
        self.assertIn("memory", resources["requests"])
        self.assertIn("memory", resources["limits"])

    def test_shutdown_fits_in_the_grace_period(self):
        grace_ms = self.pod["terminationGracePeriodSeconds"] * 1000
        pre_stop_ms = self.ctr["lifecycle"]["preStop"]["sleep"]["seconds"] * 1000
        drain_ms = self.conf_int("shutdown_timeout_ms")
        self.assertLessEqual(pre_stop_ms + drain_ms + 1000, grace_ms,
                             "preStop %d ms + shutdown_timeout_ms %d + 1 s > grace %d ms"
                             % (pre_stop_ms, drain_ms, grace_ms))

    def test_memory_limit_covers_what_clients_can_make_it_hold(self):
        limit = self.ctr["resources"]["limits"]["memory"]
        m = re.fullmatch(r"(\d+)Mi", limit)
        self.assertIsNotNone(m, "memory limit %r not in Mi" % limit)
        pool = self.conf_int("buffer_size", 16384) * self.conf_int("buffer_count", 512)
        held = self.conf_int("max_connections") * self.conf_int("max_pending_bytes")
        self.assertLessEqual(pool + held, int(m.group(1)) << 20)


if __name__ == "__main__":
    unittest.main()
