"""Evidence stores: one contract (``affidavit.store.base.Store``) for local, S3 and GCS."""
