"""imgcls's speed claims, measured side by side against a reference-style loop (a developer tool: run from a clone with python -m bench)."""
