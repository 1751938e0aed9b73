"""Lightning callbacks: thin wiring over the pure core (`lightning_scaling.schedules`, `.sparsity`, `.flops`)."""
