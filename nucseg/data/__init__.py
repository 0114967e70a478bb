"""Reading MoNuSeg and images, generating demo data, and torch datasets of crops."""
