"""Pin every container image infra/ names to the digest its tag points at now.

    python infra/pin_images.py            # resolve each tag, write name:tag@sha256:...
    python infra/pin_images.py --check    # exit 1, listing every image not pinned by digest
    make pin-images / make check-images   # the same, from the project root

An image pinned by digest is the same bytes on every node and every day: a tag can be moved to
another build (or to a malicious one) without any manifest changing. The tag stays beside the
digest (``postgres:16@sha256:...``) for the reader; Kubernetes, Docker and Ray's launcher pull
by the digest and ignore the tag.

What it reads: ``image:`` values in ``infra/**/*.yaml`` and ``FROM`` lines of
``infra/**/Dockerfile*``. Resolving follows the registry HTTP API (the OCI distribution spec):
``GET /v2/<name>/manifests/<tag>`` with the manifest media types accepted; a ``401`` with a
``Bearer`` challenge is answered by fetching a pull token from the challenge's realm
(anonymously, or with the registry's entry in ``~/.docker/config.json``), then the request is
repeated. The digest is the SHA-256 of the manifest bytes, checked against the registry's
``Docker-Content-Digest`` header. For a multi-platform image that is the index's digest, which
every platform resolves from.

Every reference is resolved before any file is written, and each file is replaced atomically:
a registry that fails half-way leaves infra/ as it was. ``localhost`` and ``127.0.0.1``
registries are spoken to over plain HTTP (as Docker does); every other registry over HTTPS.

Standard library only, so it runs where the project is not installed (a release job, say).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

INFRA = Path(__file__).resolve().parent
DOCKER_HUB = "registry-1.docker.io"
#: Index (multi-platform) types first: pinning the index keeps every platform pullable.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: ``image: <ref>`` in YAML (optionally quoted, optionally a trailing comment).
YAML_IMAGE = re.compile(r"^\s*(?:-\s+)?image:\s*(?P<q>[\"']?)(?P<ref>[^\s\"'#]+)(?P=q)", re.M)
#: ``FROM [--flag ...] <ref> [AS stage]`` in a Dockerfile.
DOCKER_FROM = re.compile(
    r"^FROM\s+(?:--\S+\s+)*(?P<ref>[^\s#]+)(?:\s+AS\s+(?P<stage>\S+))?", re.M | re.I
)


class PinError(Exception):
    """A reference that cannot be parsed or resolved: the message names it and the file."""


@dataclass(frozen=True)
class ImageRef:
    """``[registry/]name[:tag][@digest]``, as Docker reads it."""

    registry: str
    name: str
    tag: str | None
    digest: str | None
    text: str

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        rest, _, digest = text.partition("@")
        if digest and not DIGEST.fullmatch(digest):
            raise PinError(f"{text!r}: the digest is not sha256:<64 hex digits>")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = "docker.io", rest
        name, _, tag = path.rpartition(":") if ":" in path else (path, "", "")
        if not re.fullmatch(
            r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*", name
        ):
            raise PinError(f"{text!r}: {name!r} is not a repository name")
        if tag and not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
            raise PinError(f"{text!r}: {tag!r} is not a tag")
        if registry == "docker.io" and "/" not in name:
            name = f"library/{name}"
        return cls(registry, name, tag or None, digest or None, text)

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: str) -> str:
        """The reference as written, with ``@digest`` after the tag (any old digest replaced)."""
        return f"{self.text.partition('@')[0]}@{digest}"


@dataclass(frozen=True)
class Site:
    """One image reference in one file: where it is, so it can be rewritten in place."""

    path: Path
    line: int
    start: int
    end: int
    ref: ImageRef


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def files(root: Path) -> list[Path]:
    found = {*root.rglob("*.yaml"), *root.rglob("*.yml"), *root.rglob("Dockerfile*")}
    return sorted(p for p in found if p.is_file())


def sites(root: Path = INFRA) -> list[Site]:
    """Every image reference under ``root`` (comments are not references)."""
    out = []
    for path in files(root):
        text = path.read_text()
        dockerfile = path.name.startswith("Dockerfile")
        stages = {"scratch"}  # FROM an earlier stage (or scratch) names no image
        for m in (DOCKER_FROM if dockerfile else YAML_IMAGE).finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            ref = m.group("ref")
            if dockerfile and m.group("stage"):
                stages.add(m.group("stage").lower())
            if ref.lower() in stages or ref.startswith("$") or "{{" in ref:
                continue  # a stage, a build argument or a template: not an image to pin
            try:
                parsed = ImageRef.parse(ref)
            except PinError as e:
                raise PinError(f"{_shown(path)}:{line}: {e}") from None
            out.append(Site(path, line, m.start("ref"), m.end("ref"), parsed))
    return out


def _host(registry: str) -> str:
    return DOCKER_HUB if registry in ("docker.io", "index.docker.io") else registry


def _scheme(host: str) -> str:
    bare = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return "http" if bare in ("localhost", "127.0.0.1", "[::1]") else "https"


def _credentials(registry: str) -> str | None:
    """``user:password`` (base64) for ``registry`` from Docker's config, if it has one."""
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    keys = (registry, f"https://{registry}", "https://index.docker.io/v1/")
    for key in keys if registry == "docker.io" else keys[:2]:
        if auths.get(key, {}).get("auth"):
            return auths[key]["auth"]
    return None


def _challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def _open(request: urllib.request.Request, timeout: float):
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only, built here)


def _token(challenge: dict[str, str], ref: ImageRef, timeout: float) -> str:
    realm = challenge.get("realm")
    if not realm or urllib.parse.urlparse(realm).scheme not in ("http", "https"):
        raise PinError(f"{ref.text}: the registry's challenge has no usable realm")
    query = {"service": challenge.get("service", ""), "scope": f"repository:{ref.name}:pull"}
    request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")
    if (basic := _credentials(ref.registry)) is not None:
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with _open(request, timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        hint = "" if e.code not in (401, 403) else " (its credentials: ~/.docker/config.json)"
        raise PinError(f"{ref.text}: the token service {realm} answered {e.code}{hint}") from None
    except ValueError:
        raise PinError(f"{ref.text}: the token service {realm} did not answer JSON") from None
    token = body.get("token") or body.get("access_token")
    if not token:
        raise PinError(f"{ref.text}: the token service returned no token")
    return token


def resolve(ref: ImageRef, timeout: float = 30.0) -> str:
    """The digest ``ref``'s tag points at now, verified against the manifest's bytes."""
    if ref.tag is None:
        raise PinError(f"{ref.text}: no tag to resolve (write name:tag)")
    host = _host(ref.registry)
    url = f"{_scheme(host)}://{host}/v2/{ref.name}/manifests/{ref.tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    try:
        try:
            response = _open(urllib.request.Request(url, headers=headers), timeout)
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise
            token = _token(_challenge(e.headers.get("WWW-Authenticate", "")), ref, timeout)
            headers["Authorization"] = f"Bearer {token}"
            response = _open(urllib.request.Request(url, headers=headers), timeout)
        with response:
            body, claimed = response.read(), response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as e:
        raise PinError(f"{ref.text}: {url} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise PinError(f"{ref.text}: cannot reach {host}: {getattr(e, 'reason', e)}") from None
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if claimed and claimed != digest:
        raise PinError(f"{ref.text}: the registry says {claimed}, the manifest hashes to {digest}")
    return digest


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pin(root: Path = INFRA, timeout: float = 30.0, repin: bool = False) -> list[tuple[Site, str]]:
    """Resolve every reference (each distinct one once), then rewrite the files.

    Already pinned references are kept unless ``repin`` (then their tag is resolved again).
    Returns the (site, new reference) pairs that changed.
    """
    todo = [s for s in sites(root) if repin or not s.ref.pinned]
    digests = {}
    for s in todo:
        if s.ref.text not in digests:
            digests[s.ref.text] = resolve(s.ref, timeout)
    changed = [(s, s.ref.with_digest(digests[s.ref.text])) for s in todo]
    changed = [(s, new) for s, new in changed if new != s.ref.text]
    for path in sorted({s.path for s, _ in changed}):
        text = path.read_text()
        for s, new in sorted(
            ((s, n) for s, n in changed if s.path == path), key=lambda x: -x[0].start
        ):
            text = text[: s.start] + new + text[s.end :]
        _write_atomically(path, text)
    return changed


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument(
        "--check", action="store_true", help="only list images not pinned; exit 1 if any"
    )
    cli.add_argument("--repin", action="store_true", help="resolve pinned images' tags again")
    cli.add_argument(
        "--root", type=Path, default=INFRA, help="the folder to scan (default: infra/)"
    )
    cli.add_argument("--timeout", type=float, default=30.0, help="seconds per registry request")
    args = cli.parse_args(argv)
    try:
        if args.check:
            loose = [s for s in sites(args.root) if not s.ref.pinned]
            for s in loose:
                print(f"{_shown(s.path)}:{s.line}: {s.ref.text} is pinned by tag, not digest")
            print(f"{len(loose)} image reference(s) not pinned by digest", file=sys.stderr)
            return 1 if loose else 0
        for s, new in pin(args.root, args.timeout, args.repin):
            print(f"{_shown(s.path)}:{s.line}: {new}")
    except PinError as e:
        print(f"pin_images: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
