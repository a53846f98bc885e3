"""Signing: hashing, keys, DSSE / in-toto statements, Sigstore bundles and verification."""
