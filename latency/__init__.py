"""Everything about time on a device: profiling, lookup tables, predictors and the differentiable loss."""
