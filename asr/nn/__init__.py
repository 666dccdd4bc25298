"""Neural network modules: encoders and heads."""
