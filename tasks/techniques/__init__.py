"""The fine-tuning techniques, one module each, and the registry the CLIs are built from."""
