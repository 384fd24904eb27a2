"""The operator's runtime image (built by scripts/image, its reference in IMAGE): what it
holds, who it runs as, and that it works the way the Helm chart runs it (non-root, read-only
root filesystem, no capabilities). Run by .ci/run after scripts/image."""

import json
import os
import pathlib
import subprocess
import tarfile
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE")
pytestmark = pytest.mark.skipif(not IMAGE, reason="IMAGE is not set: build it with scripts/image")
# How the chart runs the container (tests/e2e/container.py prints the same flags).
LOCKED_DOWN = ["--user=65532:65532", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--network=none"]


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def run(*args):
    return docker("run", "--rm", *LOCKED_DOWN, IMAGE, *args, check=False)


def test_config_runs_the_operator_as_nonroot():
    (config,) = json.loads(docker("image", "inspect", IMAGE).stdout)
    c = config["Config"]
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == ["/usr/local/bin/dx-macsec-operator"]
    assert c["Cmd"] == ["run"]
    assert "8080/tcp" in c["ExposedPorts"]
    # The release binary and glibc; no shell, no package manager.
    assert config["Size"] < 120 * 1024 * 1024, config["Size"]


def test_holds_the_binary_its_libraries_and_ca_certificates_and_no_shell():
    container = docker("create", IMAGE).stdout.strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tar = pathlib.Path(tmp) / "fs.tar"
            with open(tar, "wb") as f:
                subprocess.run(["docker", "export", container], stdout=f, check=True)
            with tarfile.open(tar) as t:
                names = set(t.getnames())
                passwd = t.extractfile("etc/passwd").read().decode()
                ca = t.getmember("etc/ssl/certs/ca-certificates.crt")
    finally:
        docker("rm", "-f", container)
    for path in ["usr/local/bin/dx-macsec-operator", "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6"]:
        assert path in names, path
    assert ca.size > 100_000, "a CA bundle for TLS to AWS and STS"
    assert "nonroot:x:65532:65532" in passwd
    assert not {"bin/sh", "usr/bin/sh", "bin/bash"} & names


def test_answers_help_locked_down():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: dx-macsec-operator" in out.stdout
    for command in ["run", "plan", "apply", "keygen", "crd"]:
        assert command in out.stdout


def test_prints_the_committed_crds():
    out = run("crd")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "crds" / "dxmacsec.io.yaml").read_text()


def test_run_without_a_cluster_says_so():
    out = run("run")
    assert out.returncode == 1
    assert "cannot connect to the Kubernetes API" in out.stderr
