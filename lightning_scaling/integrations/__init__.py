"""Adapters at the edge: MLflow run store and LightningCLI helpers."""
