"""Landing ingestion, shared by every pipeline that reads a landing dataset."""
