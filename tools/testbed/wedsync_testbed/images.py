"""Every container image the chart, the operator and the test bed's node run, built here.

No registry can be reached from the machines this project is built on, so the images are
built locally with buildah (``--isolation chroot``, the ``vfs`` storage driver: no daemon, no
user namespaces) on a Debian 12 base made by ``debootstrap --variant=minbase``:

- ``debian``: debootstrap; ``localhost/wedsync/debian:bookworm``;
- ``python``: ``images/python/Dockerfile`` on ``debian``; ``localhost/wedsync/python:3.11``;
- ``operator``: the root ``Dockerfile`` on ``python``; the chart's ``image``;
- ``backup``: ``images/backup/Dockerfile`` on ``debian``; the chart's ``backupImage`` (it has
  the PostgreSQL server too, so it is also the image of the test bed's databases);
- ``kubectl``: the built kubectl; the chart's ``uninstallHook.image``;
- ``pause``: ``tools/addons/pause``; the node's sandbox image;
- ``coredns``: the built CoreDNS; the node's cluster DNS;
- ``local-path-provisioner``: the built provisioner; the node's PersistentVolumes.

The references of the project's own images are read from the chart's ``values.yaml``, so the
chart runs with its defaults and the operator's default backup image is the one built.

Each image is cached by content: its key hashes its Dockerfile, every file its ``COPY`` lines
take from the build context (or the binary it packages), its build arguments and the key of
the image it builds on. The result is an OCI archive (uncompressed layers) under
``${WEDSYNC_CACHE:-~/.cache/wedsync-operator}/images/archives``; a later build with the same
key does nothing. Every blob of every archive is also kept once, by digest, in ``images/blobs``:
a node hard-links them into its containerd's content store before it imports the archives,
so an import writes no layer again (`BlobStore`). Several builds on one machine take turns
(a file lock).

    python -m wedsync_testbed.images            # build what is missing, list the archives
    python -m wedsync_testbed.images --list     # only list (key, cached or not)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed.controlplane import REPO_ROOT, Binaries, binaries

CHART_VALUES = REPO_ROOT / "charts" / "wedsync-operator" / "values.yaml"
#: Bump when the way an image is made changes in a way its inputs do not show.
RECIPE = "1"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("WEDSYNC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get("WEDSYNC_DEBIAN_SECURITY_MIRROR",
                                 "http://deb.debian.org/debian-security")
#: Archives kept per image (older keys are removed), so branches can alternate cheaply.
KEEP_PER_IMAGE = 3
#: Label every built image carries: its content key (to tell a stale local image).
KEY_LABEL = "io.wedsync.content-key"
#: Host files a pip install in a build needs to reach PyPI the way the host does (an index,
#: a proxy's CA), mounted read-only where they are on the host. Only for builds that run pip:
#: a build that installs Debian's ca-certificates rewrites the bundle, which a read-only
#: mount makes dpkg fail on.
PIP_HOST_FILES = ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt")


class ImageBuildError(RuntimeError):
    """An image could not be built."""


@dataclass(frozen=True)
class ImageSpec:
    """How to build one image.

    `dockerfile` is relative to the repository. With `context` set (relative to the
    repository) it is built there; otherwise in a staging folder holding the Dockerfile and
    the `binaries` (file names in the control plane's bin folder). `base` names the image whose
    reference is passed as the build argument `base_arg`. `debootstrap` marks the base image,
    which has no Dockerfile.
    """

    name: str
    reference: str
    dockerfile: str | None = None
    context: str | None = None
    base: str | None = None
    base_arg: str = "DEBIAN_IMAGE"
    binaries: tuple[str, ...] = ()
    debootstrap: bool = False
    #: the build runs pip: the host's pip configuration and CA bundle are mounted
    pip: bool = False
    #: only other images build on it; no Pod runs it (a node need not import it)
    base_only: bool = False


def chart_references(values_file: Path = CHART_VALUES) -> dict[str, str]:
    """The image references of the chart's defaults: operator, backup and kubectl."""
    values: dict[str, Any] = yaml.safe_load(values_file.read_text())
    hook = values["uninstallHook"]["image"]
    return {
        "operator": f"{values['image']['repository']}:{values['image']['tag']}",
        "backup": f"{values['backupImage']['repository']}:{values['backupImage']['tag']}",
        "kubectl": f"{hook['repository']}:{hook['tag']}",
    }


def go_module_version(module: str, go_mod: Path) -> str:
    """The version a go.mod requires of `module` (its `require` line)."""
    for line in go_mod.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == module and parts[1].startswith("v"):
            return parts[1]
        if len(parts) >= 3 and parts[0] == "require" and parts[1] == module:
            return parts[2]
    raise ImageBuildError(f"{go_mod} does not require {module}")


ADDONS_GO_MOD = REPO_ROOT / "tools" / "addons" / "go.mod"


def catalog() -> dict[str, ImageSpec]:
    """Every image, by name, in build order (a base before what builds on it)."""
    refs = chart_references()
    coredns = go_module_version("github.com/coredns/coredns", ADDONS_GO_MOD)
    provisioner = go_module_version("github.com/rancher/local-path-provisioner", ADDONS_GO_MOD)
    specs = [
        ImageSpec("debian", f"localhost/wedsync/debian:{DEBIAN_SUITE}", debootstrap=True),
        ImageSpec("python", "localhost/wedsync/python:3.11",
                  dockerfile="images/python/Dockerfile", context="images/python",
                  base="debian", base_only=True),
        ImageSpec("operator", refs["operator"], dockerfile="Dockerfile", context=".",
                  base="python", base_arg="PYTHON_IMAGE", pip=True),
        ImageSpec("backup", refs["backup"], dockerfile="images/backup/Dockerfile",
                  context="images/backup", base="debian"),
        ImageSpec("kubectl", refs["kubectl"], dockerfile="images/kubectl/Dockerfile",
                  binaries=("kubectl",)),
        ImageSpec("pause", "localhost/wedsync/pause:1", dockerfile="images/pause/Dockerfile",
                  binaries=("pause",)),
        ImageSpec("coredns", f"localhost/wedsync/coredns:{coredns}",
                  dockerfile="images/coredns/Dockerfile", binaries=("coredns",)),
        ImageSpec("local-path-provisioner",
                  f"localhost/wedsync/local-path-provisioner:{provisioner}",
                  dockerfile="images/local-path-provisioner/Dockerfile",
                  binaries=("local-path-provisioner",)),
    ]
    return {spec.name: spec for spec in specs}


# ---- content keys (pure) --------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments
    and blank lines dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += line
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def copied_sources(text: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY and ADD lines take (not ``--from`` ones)."""
    sources: list[str] = []
    for word, rest in dockerfile_instructions(text):
        if word not in ("COPY", "ADD"):
            continue
        exec_form = rest.startswith("[")
        parts = [str(p) for p in json.loads(rest)] if exec_form else shlex.split(rest)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def _skipped(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def context_files(context: Path, sources: Iterable[str]) -> list[Path]:
    """The files under `context` that `sources` name (folders walked), sorted; compiled
    Python files are left out (.dockerignore leaves them out of the context too)."""
    files: set[Path] = set()
    for source in sources:
        path = context / source.rstrip("/")
        if not path.exists():
            raise ImageBuildError(f"COPY source {source} is missing from {context}")
        if path.is_file():
            files.add(path)
            continue
        files.update(p for p in path.rglob("*") if p.is_file() and not _skipped(p))
    return sorted(files)


def content_key(parts: Sequence[tuple[str, bytes]]) -> str:
    """A sha256 over named parts (names and lengths included, so parts cannot run into
    each other)."""
    digest = hashlib.sha256()
    for name, data in parts:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def image_key(spec: ImageSpec, base_key: str | None, bins: Binaries | None) -> str:
    """The content key of `spec` given the key of its base."""
    parts: list[tuple[str, bytes]] = [("recipe", RECIPE.encode()),
                                      ("reference", spec.reference.encode())]
    if spec.debootstrap:
        parts += [("debootstrap", f"minbase {DEBIAN_SUITE} {DEBIAN_MIRROR}".encode()),
                  ("sources", debian_sources().encode())]
        return content_key(parts)
    assert spec.dockerfile is not None
    dockerfile = REPO_ROOT / spec.dockerfile
    text = dockerfile.read_text()
    parts.append(("Dockerfile", text.encode()))
    if base_key is not None:
        parts.append((f"base {spec.base_arg}", base_key.encode()))
    if spec.context is not None:
        context = REPO_ROOT / spec.context
        for path in context_files(context, copied_sources(text)):
            parts.append((str(path.relative_to(context)), file_digest(path)))
    for name in spec.binaries:
        if bins is None:
            raise ImageBuildError(f"{spec.name} needs the built binaries")
        parts.append((f"binary {name}", file_digest(bins.folder / name)))
    return content_key(parts)


def debian_sources() -> str:
    """The base image's apt sources: the release, its updates and security updates."""
    return (f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main\n")


# ---- the cache ------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$WEDSYNC_CACHE``, else ``$XDG_CACHE_HOME/wedsync-operator`` (``~/.cache``)."""
    explicit = os.environ.get("WEDSYNC_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "wedsync-operator"


@dataclass(frozen=True)
class BuiltImage:
    """One image's archive in the cache (an OCI archive that `ctr images import` reads)."""

    name: str
    reference: str
    key: str
    archive: Path
    base_only: bool = False

    @property
    def cached(self) -> bool:
        return self.archive.exists()


@dataclass
class ImageBuilder:
    """Builds the catalog's images into the cache. Use `ensure()`."""

    cache: Path = field(default_factory=lambda: cache_root() / "images")
    bins: Binaries | None = None
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    timings: dict[str, float] = field(default_factory=dict)

    # ---- planning ---------------------------------------------------------------------------
    def plan(self, names: Iterable[str] | None = None) -> dict[str, BuiltImage]:
        """The images `names` need (bases included, every image when None), with their keys
        and archive paths, in build order."""
        specs = catalog()
        wanted = set(specs if names is None else names)
        unknown = wanted - set(specs)
        if unknown:
            raise ImageBuildError(f"unknown image(s) {sorted(unknown)}; known: {sorted(specs)}")
        closure: set[str] = set()
        for name in wanted:
            current: str | None = name
            while current is not None:
                closure.add(current)
                current = specs[current].base
        if any(specs[n].binaries for n in closure) and self.bins is None:
            self.bins = binaries()
        keys: dict[str, BuiltImage] = {}
        for name, spec in specs.items():
            if name not in closure:
                continue
            base_key = keys[spec.base].key if spec.base is not None else None
            key = image_key(spec, base_key, self.bins)
            keys[name] = BuiltImage(name, spec.reference, key,
                                    self.cache / "archives" / f"{name}-{key[:16]}.oci.tar",
                                    spec.base_only)
        return keys

    def ensure(self, names: Iterable[str] | None = None) -> dict[str, BuiltImage]:
        """Builds what is not cached (and what it builds on); returns every planned image."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with self._lock():
            planned = self.plan(names)
            specs = catalog()
            for name, image in planned.items():
                if image.cached:
                    continue
                started = time.monotonic()
                if self._local_key(image) == image.key:
                    self._export(image)  # built before, its archive is gone: export again
                else:
                    self._build(specs[name], image, planned)
                self.timings[name] = time.monotonic() - started
                self.log(f"built {name} ({image.reference}) in {self.timings[name]:.0f} s")
                self._prune_archives(name, keep=image.archive)
            if self.timings:
                self._buildah("rmi", "--prune", check=False)
                self.blobs.prune(p for p in (self.cache / "archives").glob("*.oci.tar"))
        return planned

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.cache / "blobs")

    # ---- building ---------------------------------------------------------------------------
    def _build(self, spec: ImageSpec, image: BuiltImage, planned: dict[str, BuiltImage]
               ) -> None:
        if spec.debootstrap:
            self._build_debian(spec, image)
        else:
            if spec.base is not None:
                self._ensure_local(planned[spec.base])
            self._build_dockerfile(spec, image, planned)
        self._export(image)

    def _export(self, image: BuiltImage) -> None:
        """The image from buildah's storage into its archive (layers uncompressed: a node
        imports and unpacks them faster than it would gunzip them), and its blobs into the
        blob store."""
        image.archive.parent.mkdir(parents=True, exist_ok=True)
        partial = image.archive.with_name(image.archive.name + ".partial")
        partial.unlink(missing_ok=True)
        self._buildah("push", "-q", "--disable-compression", image.reference,
                      f"oci-archive:{partial}:{image.reference}")
        self.blobs.add_archive(partial)
        partial.rename(image.archive)

    def _build_debian(self, spec: ImageSpec, image: BuiltImage) -> None:
        with tempfile.TemporaryDirectory(prefix="wedsync-debootstrap-",
                                         dir=self.cache) as tmp:
            rootfs = Path(tmp) / "rootfs"
            self.log(f"debootstrap --variant=minbase {DEBIAN_SUITE} ({DEBIAN_MIRROR})")
            self._run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs),
                       DEBIAN_MIRROR], what="debootstrap")
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            (rootfs / "etc" / "apt" / "sources.list").write_text(debian_sources())
            container = self._buildah("from", "scratch").strip()
            try:
                mount = Path(self._buildah("mount", container).strip())
                # tar keeps owners, modes and links exactly; /dev, /proc, /sys are the runtime's
                packed = subprocess.Popen(
                    ["tar", "-C", str(rootfs), "--exclude=./dev/*", "--exclude=./proc/*",
                     "--exclude=./sys/*", "-cf", "-", "."], stdout=subprocess.PIPE)
                self._run(["tar", "-C", str(mount), "-xpf", "-"], stdin=packed.stdout,
                          what="unpacking the rootfs")
                if packed.wait() != 0:
                    raise ImageBuildError("packing the debootstrapped rootfs failed")
                self._buildah("umount", container)
                self._buildah("config", "--env",
                              "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "--cmd", "/bin/bash", "--label", f"{KEY_LABEL}={image.key}",
                              container)
                self._buildah("commit", "-q", container, image.reference)
            finally:
                self._buildah("rm", container, check=False)

    def _build_dockerfile(self, spec: ImageSpec, image: BuiltImage,
                          planned: dict[str, BuiltImage]) -> None:
        assert spec.dockerfile is not None
        args = ["bud", "--isolation", "chroot", "--label", f"{KEY_LABEL}={image.key}",
                "-t", image.reference]
        if spec.base is not None:
            args += ["--build-arg", f"{spec.base_arg}={planned[spec.base].reference}"]
        for host_file in PIP_HOST_FILES if spec.pip else ():
            if Path(host_file).is_file():
                args += ["-v", f"{host_file}:{host_file}:ro"]
        with self._context(spec) as context:
            dockerfile = context / "Dockerfile" if spec.context is None else \
                REPO_ROOT / spec.dockerfile
            self._buildah(*args, "-f", str(dockerfile), str(context), what=f"building {spec.name}")

    @contextlib.contextmanager
    def _context(self, spec: ImageSpec) -> Iterator[Path]:
        if spec.context is not None:
            yield REPO_ROOT / spec.context
            return
        assert spec.dockerfile is not None
        assert self.bins is not None
        with tempfile.TemporaryDirectory(prefix=f"wedsync-{spec.name}-",
                                         dir=self.cache) as tmp:
            staging = Path(tmp)
            shutil.copy2(REPO_ROOT / spec.dockerfile, staging / "Dockerfile")
            for name in spec.binaries:
                shutil.copy2(self.bins.folder / name, staging / name)
            yield staging

    def _local_key(self, image: BuiltImage) -> str:
        """The content key of the image buildah's storage holds under the reference."""
        return self._buildah("inspect", "--type", "image", "--format",
                             f'{{{{index .OCIv1.Config.Labels "{KEY_LABEL}"}}}}',
                             image.reference, check=False).strip()

    def _ensure_local(self, image: BuiltImage) -> None:
        """Makes sure buildah's storage holds `image` as built (loads its archive if not)."""
        if self._local_key(image) != image.key:
            self._buildah("pull", "-q", f"oci-archive:{image.archive}")

    def _prune_archives(self, name: str, keep: Path) -> None:
        for old_format in keep.parent.glob(f"{name}-*.tar"):
            if not old_format.name.endswith(".oci.tar"):
                old_format.unlink(missing_ok=True)
        older = sorted((p for p in keep.parent.glob(f"{name}-*.oci.tar") if p != keep),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for path in older[KEEP_PER_IMAGE - 1:]:
            path.unlink(missing_ok=True)

    # ---- processes --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.cache / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _buildah(self, *args: str, check: bool = True, what: str | None = None) -> str:
        storage = self.cache / "buildah"
        argv = ["buildah", "--root", str(storage / "root"), "--runroot",
                str(storage / "run"), "--storage-driver", "vfs", *args]
        return self._run(argv, check=check, what=what or f"buildah {args[0]}")

    def _run(self, argv: Sequence[str], *, check: bool = True, what: str,
             stdin: Any = None) -> str:
        log_dir = self.cache / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
        result = subprocess.run(list(argv), stdin=stdin, capture_output=True, text=True,
                                check=False, env=env)
        if result.returncode != 0 and check:
            log = log_dir / f"{what.replace(' ', '-')}.log"
            log.write_text(f"$ {shlex.join(argv)}\n{result.stdout}\n{result.stderr}")
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
            raise ImageBuildError(f"{what} failed ({result.returncode}); full log {log}:\n"
                                  f"{tail}")
        return result.stdout


class BlobStore:
    """Every blob of the cached archives, once, by digest (``sha256/<hex>``), in the layout
    of containerd's content store: a node hard-links them into its own store, so that
    importing an archive finds every layer already there and writes only metadata."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def folder(self) -> Path:
        return self.root / "sha256"

    def add_archive(self, archive: Path) -> None:
        """Copies the archive's blobs that are not yet in the store."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile() or not member.name.startswith("blobs/sha256/"):
                    continue
                target = self.folder / Path(member.name).name
                if target.exists():
                    continue
                source = tar.extractfile(member)
                assert source is not None
                partial = target.with_name(target.name + ".partial")
                with partial.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                partial.rename(target)

    def prune(self, archives: Iterable[Path]) -> None:
        """Removes the blobs no archive in `archives` holds."""
        if not self.folder.is_dir():
            return
        wanted: set[str] = set()
        for archive in archives:
            with tarfile.open(archive) as tar:
                wanted.update(Path(name).name for name in tar.getnames()
                              if name.startswith("blobs/sha256/"))
        for blob in self.folder.iterdir():
            if blob.name not in wanted:
                blob.unlink(missing_ok=True)

    def link_into(self, content_store: Path) -> int:
        """Hard-links every blob into a containerd content store folder (its
        ``io.containerd.content.v1.content``), copying where a link cannot cross file
        systems; returns how many."""
        target = content_store / "blobs" / "sha256"
        target.mkdir(parents=True, exist_ok=True)
        count = 0
        for blob in self.folder.glob("*") if self.folder.is_dir() else ():
            if blob.name.endswith(".partial") or (target / blob.name).exists():
                continue
            try:
                os.link(blob, target / blob.name)
            except OSError:
                shutil.copy2(blob, target / blob.name)
            count += 1
        return count


def missing_tools() -> str | None:
    """Why images cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "building images needs root (debootstrap, buildah --isolation chroot)"
    for tool in ("buildah", "debootstrap", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install buildah debootstrap)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="images to build (default: all)")
    parser.add_argument("--list", action="store_true", help="list keys, build nothing")
    opts = parser.parse_args(argv)
    builder = ImageBuilder()
    names = opts.names or None
    if opts.list:
        planned = builder.plan(names)
    else:
        why = missing_tools()
        if why:
            print(f"cannot build images: {why}", file=sys.stderr)
            return 2
        started = time.monotonic()
        planned = builder.ensure(names)
        print(f"images ready in {time.monotonic() - started:.0f} s "
              f"({len(builder.timings)} built)", file=sys.stderr)
    for image in planned.values():
        size = f"{image.archive.stat().st_size / 1e6:7.0f} MB" if image.cached else "  missing"
        print(f"{image.name:24} {size}  {image.reference}  {image.archive}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
