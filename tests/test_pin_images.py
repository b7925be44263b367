"""infra/pin_images.py against a registry on 127.0.0.1 that speaks the distribution API with
Bearer-token challenges, as Docker Hub and ghcr.io do."""

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
sys.path.insert(0, str(INFRA))
import pin_images  # noqa: E402

INDEX = "application/vnd.oci.image.index.v1+json"


class Registry:
    """Tags -> manifest bytes; a pull token per repository; every request recorded."""

    def __init__(self):
        self.tags: dict[tuple[str, str], bytes] = {}
        self.lie: set[str] = set()  # repositories whose Docker-Content-Digest header is wrong
        self.private: dict[str, str] = {}  # repository -> the Basic credentials its token needs
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                registry.requests.append(self.path)
                url = urlparse(self.path)
                if url.path == "/token":
                    scope = parse_qs(url.query)["scope"][0]
                    name = re.fullmatch(r"repository:(.+):pull", scope).group(1)
                    needed = registry.private.get(name)
                    if needed and self.headers.get("Authorization") != f"Basic {needed}":
                        return self.reply(401, b"{}")
                    return self.reply(200, json.dumps({"token": f"pull-{name}"}).encode())
                m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", url.path)
                if not m:
                    return self.reply(404, b"{}")
                name, tag = m.groups()
                if self.headers.get("Authorization") != f"Bearer pull-{name}":
                    realm = f"http://{self.headers['Host']}/token"
                    challenge = (
                        f'Bearer realm="{realm}",service="test",scope="repository:{name}:pull"'
                    )
                    return self.reply(401, b"{}", {"WWW-Authenticate": challenge})
                assert INDEX in self.headers["Accept"]
                body = registry.tags.get((name, tag))
                if body is None:
                    return self.reply(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
                digest = (
                    "sha256:"
                    + hashlib.sha256(body + (b"x" if name in registry.lie else b"")).hexdigest()
                )
                self.reply(200, body, {"Docker-Content-Digest": digest, "Content-Type": INDEX})

            def reply(self, code, body, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def push(self, name: str, tag: str, build: str) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "build": build}).encode()
        self.tags[(name, tag)] = body
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry():
    r = Registry()
    yield r
    r.close()


@pytest.fixture
def infra_copy(tmp_path, registry):
    """infra/ with every image moved to the local registry (same repository paths and tags)."""
    root = tmp_path / "infra"
    shutil.copytree(INFRA, root, ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.sh"))
    for s in pin_images.sites(root):
        text = s.path.read_text()
        moved = f"{registry.host}/{s.ref.name}:{s.ref.tag}"
        s.path.write_text(text.replace(s.ref.text, moved))
    return root


def run(*args, cwd=ROOT):
    script = str(INFRA / "pin_images.py")
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def independent_image_count(root):
    """Image references read by YAML and by FROM lines, not by the tool's own patterns."""

    def images(node):
        if isinstance(node, dict):
            return sum(1 if k == "image" else images(v) for k, v in node.items())
        if isinstance(node, list):
            return sum(images(v) for v in node)
        return 0

    n = sum(images(d) for p in root.rglob("*.yaml") for d in yaml.safe_load_all(p.read_text()))
    return n + sum(
        len(re.findall(r"^FROM ", p.read_text(), re.M)) for p in root.rglob("Dockerfile")
    )


def test_references_are_parsed_as_docker_reads_them():
    def parse(text):
        return pin_images.ImageRef.parse(text)

    def parts(text):
        ref = parse(text)
        return ref.registry, ref.name, ref.tag

    assert parts("postgres:16") == ("docker.io", "library/postgres", "16")
    assert parts("rayproject/ray:2.60.0-py311") == ("docker.io", "rayproject/ray", "2.60.0-py311")
    ref = parse("localhost:5000/a/b:1@sha256:" + "0" * 64)
    assert (ref.registry, ref.name, ref.tag, ref.pinned) == ("localhost:5000", "a/b", "1", True)
    assert ref.with_digest("sha256:" + "1" * 64) == "localhost:5000/a/b:1@sha256:" + "1" * 64
    assert parse("ghcr.io/org/img").tag is None
    with pytest.raises(pin_images.PinError, match="digest"):
        parse("postgres:16@sha256:abc")
    with pytest.raises(pin_images.PinError, match="repository name"):
        parse("Postgres:16")


def test_check_finds_every_image_infra_names():
    result = run("--check")
    listed = re.findall(r"^infra/\S+:\d+: (\S+) is pinned by tag", result.stdout, re.M)
    assert (
        len(pin_images.sites(INFRA))
        == independent_image_count(INFRA)
        == len(listed) + sum(s.ref.pinned for s in pin_images.sites(INFRA))
    )
    assert result.returncode == (1 if listed else 0)


def test_pin_resolves_through_token_challenge_and_rewrites_atomically(registry, infra_copy):
    digests = {}
    for s in pin_images.sites(infra_copy):
        digests[s.ref.name] = registry.push(s.ref.name, s.ref.tag, "first")
    before = {p: yaml.safe_load_all(p.read_text()) for p in infra_copy.rglob("*.yaml")}
    before = {p: [d for d in docs if d] for p, docs in before.items()}

    result = run("--root", str(infra_copy))
    assert result.returncode == 0, result.stderr
    after = pin_images.sites(infra_copy)
    assert len(after) == independent_image_count(infra_copy) > 0
    for s in after:
        assert s.ref.pinned and s.ref.digest == digests[s.ref.name] and s.ref.tag
    assert any(p.startswith("/token?") for p in registry.requests)  # the challenge was answered
    assert run("--root", str(infra_copy), "--check").returncode == 0
    # Only the references changed: every manifest still parses to the same documents, but images.
    for path, docs in before.items():
        text = re.sub(r"@sha256:[0-9a-f]{64}", "", path.read_text())
        assert [d for d in yaml.safe_load_all(text) if d] == docs
    assert not list(infra_copy.rglob(".*.*"))  # no temporary file left

    # Pinned references stay as they are, until --repin follows a tag that moved.
    name = after[0].ref.name
    moved = registry.push(name, after[0].ref.tag, "second")
    assert run("--root", str(infra_copy)).stdout == ""
    assert run("--root", str(infra_copy), "--repin").returncode == 0
    assert {s.ref.digest for s in pin_images.sites(infra_copy) if s.ref.name == name} == {moved}


def test_a_failure_leaves_every_file_as_it_was(registry, infra_copy):
    sites = pin_images.sites(infra_copy)
    for s in sites[1:]:
        registry.push(s.ref.name, s.ref.tag, "first")
    registry.tags.pop((sites[0].ref.name, sites[0].ref.tag), None)  # one tag the registry lacks
    before = snapshot(infra_copy)
    result = run("--root", str(infra_copy))
    assert result.returncode == 2
    assert "404" in result.stderr and sites[0].ref.text in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(infra_copy) == before


def test_a_digest_that_does_not_match_the_manifest_is_refused(registry, infra_copy):
    sites = pin_images.sites(infra_copy)
    for s in sites:
        registry.push(s.ref.name, s.ref.tag, "first")
    registry.lie.add(sites[0].ref.name)
    before = snapshot(infra_copy)
    result = run("--root", str(infra_copy))
    assert result.returncode == 2 and "hashes to" in result.stderr
    assert snapshot(infra_copy) == before


def test_a_private_repository_uses_dockers_credentials(registry, tmp_path, monkeypatch):
    digest = registry.push("team/app", "1", "first")
    registry.private["team/app"] = base64.b64encode(b"me:secret").decode()
    (tmp_path / "Dockerfile").write_text(f"FROM {registry.host}/team/app:1 AS base\nFROM base\n")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    refused = run("--root", str(tmp_path))  # no credentials: the token is refused
    assert refused.returncode == 2 and "token service" in refused.stderr and "401" in refused.stderr
    (tmp_path / "docker").mkdir()
    auths = {registry.host: {"auth": registry.private["team/app"]}}
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": auths}))
    result = run("--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    # The stage name in the second FROM is not an image.
    assert (tmp_path / "Dockerfile").read_text().splitlines() == [
        f"FROM {registry.host}/team/app:1@{digest} AS base",
        "FROM base",
    ]


def test_an_unreachable_registry_is_one_line(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:9/none/such:1\n")
    result = run("--root", str(tmp_path), "--timeout", "5")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot reach 127.0.0.1:9" in result.stderr
