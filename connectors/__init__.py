"""Connectors: one module per external system (auth, pagination, retries, rate limits); no compliance logic.

The first connectors (MLflow, AWS, Google Cloud, Jira, GitHub) arrive with their issues; the files
and git collectors of this release need no external service.
"""
