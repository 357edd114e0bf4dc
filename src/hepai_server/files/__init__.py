"""The file service: uploaded files, resumable uploads, and where their bytes live."""
