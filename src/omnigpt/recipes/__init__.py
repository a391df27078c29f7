"""End-to-end jobs built from the parts: training with its plots, the demo, the fusion comparison, the report."""
