"""The ListOps study: how few parameters a small transformer needs, per task mix and
curriculum (arXiv 2505.18369, "Small Models, Smarter Learning")."""
