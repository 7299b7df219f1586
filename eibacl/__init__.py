"""eibacl: DA-Fusion synthetic data for supervised contrastive learning."""
