"""The fine-tuning worker: claims jobs from the store, validates their files, and runs each training
as `tunesmith train` in a subprocess, reporting its steps and checkpoints back to the store."""
