"""Native code generation with llvmlite (the only package that imports it)."""
