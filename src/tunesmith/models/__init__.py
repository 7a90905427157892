"""Load a base model (catalog name, local folder, .gguf file, hub id) and add adapters."""
