"""Training: scored samples -> micro-batches -> loss -> optimizer step -> weight sync."""
