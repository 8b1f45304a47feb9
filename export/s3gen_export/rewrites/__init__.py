"""Graph rewrites: what turns the checkpoint-faithful model into an export-ready one (transforms, attention kernels)."""
