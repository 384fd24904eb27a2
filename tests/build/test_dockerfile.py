"""The Dockerfile users build stays buildable as Cargo.toml changes: every target Cargo.toml
declares explicitly (whose file Cargo reads even when the target is not built) is given to
the dependency-caching `cargo build` in the Dockerfile, and no Dockerfile names a Rust
release older than the `rust-version` Cargo.toml declares."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def declared_targets(manifest: pathlib.Path) -> list[str]:
    """The files of the targets a manifest declares in [[bin]], [[test]], [[bench]] and
    [[example]] tables, relative to the repository root."""
    data = tomllib.loads(manifest.read_text())
    base = manifest.parent.relative_to(ROOT)
    folders = {"bin": "src/bin", "test": "tests", "bench": "benches", "example": "examples"}
    paths = []
    for kind, folder in folders.items():
        for target in data.get(kind, []):
            path = target.get("path") or f"{folder}/{target['name']}.rs"
            paths.append(str(base / path).removeprefix("./"))
    return paths


def dependency_layer() -> str:
    """The Dockerfile's text up to its first `COPY src`: the dependency-caching layer."""
    return DOCKERFILE.split("COPY src src", 1)[0]


def test_every_declared_target_has_a_file_in_the_dependency_layer():
    layer = dependency_layer()
    missing = [
        path
        for manifest in [ROOT / "Cargo.toml", *ROOT.glob("*/Cargo.toml")]
        for path in declared_targets(manifest)
        if path not in layer
    ]
    assert not missing, f"the Dockerfile's first cargo build lacks the files of {missing}: add a stub for each"


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_no_dockerfile_names_a_rust_older_than_rust_version():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    msrv = version(manifest["workspace"]["package"]["rust-version"])
    found = []
    for dockerfile in ROOT.glob("Dockerfile*"):
        for tag in re.findall(r"FROM\s+(?:\S+/)?rust:(\d+\.\d+(?:\.\d+)?)", dockerfile.read_text()):
            found.append(tag)
            # rust:1.95 is the newest 1.95.x: compare on the parts the tag gives.
            assert version(tag) >= msrv[: len(version(tag))], f"{dockerfile.name} builds with Rust {tag}, older than rust-version {msrv}"
    assert found, "the Dockerfile names no rust image"
