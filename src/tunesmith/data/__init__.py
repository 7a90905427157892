"""Read a source -> rows -> messages / text -> validate -> template and tokenize -> batches."""
